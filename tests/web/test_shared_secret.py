"""Without SECRET_KEY, every process and every restart signs links with the same stored key.

A worker process signs the unsubscribe links in the mail it sends; a web process reads them,
maybe another one, maybe after a restart. Before, each made its own random key and the links
of yesterday's mail, or of a separate worker's, did not verify.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from app.main import create_app
from app.settings import Settings
from app.storage.database import Database
from app.storage.instance import LINK_SECRET, shared_secret
from app.storage.schema import instance_secrets
from tests.conftest import make_brand
from tests.web.test_status_hooks import EMAIL, NOW, PUBLIC_URL, insert_message
from tests.web.test_unsubscribe import ONE_CLICK, path_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": database_url, "PUBLIC_URL": PUBLIC_URL})


async def test_processes_share_one_stored_key(settings: Settings) -> None:
    # Several processes starting at once (separate Database objects, separate pools).
    dbs = [Database(settings.database_url) for _ in range(4)]
    try:
        keys = await asyncio.gather(*(shared_secret(db, LINK_SECRET, NOW) for db in dbs))
        assert len(set(keys)) == 1
        assert len(keys[0]) == 64
        assert await shared_secret(dbs[0], "other", NOW) != keys[0]
        async with dbs[0].read() as conn:
            count = (
                await conn.execute(select(func.count()).select_from(instance_secrets))
            ).scalar()
        assert count == 2
    finally:
        for db in dbs:
            await db.close()


async def test_a_link_signed_by_a_worker_verifies_in_the_web_process_after_restarts(
    settings: Settings,
) -> None:
    assert settings.secret_key == ""
    worker_db = Database(settings.database_url)
    try:
        brand_id = (await make_brand(worker_db, "acme")).id
        email_id = await insert_message(
            worker_db, brand_id, channel="email", address=EMAIL, provider="sendgrid"
        )
        # What `whereabouts worker` signs with when SECRET_KEY is empty.
        path = path_of(email_id, await shared_secret(worker_db, LINK_SECRET, NOW))
        for _ in range(2):  # the web process, then the same after a restart
            application = create_app(settings, clock=lambda: NOW + dt.timedelta(days=1))
            async with LifespanManager(application) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
                    page = await client.get(path)
                    done = await client.post(
                        path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK
                    )
            assert page.status_code == 200, page.text
            assert done.status_code == 200, done.text
    finally:
        await worker_db.close()
