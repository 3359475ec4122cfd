"""The development webhook receiver checks signatures with the registered endpoint's secret.

Like the dev inbox it is there only with DEV_INBOX on (and a dev provider in use).
"""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from app.settings import Settings
from app.storage.database import Database
from app.storage.schema import webhook_endpoints
from messaging import webhooks
from tests.conftest import BrandKey
from tests.web.support import PUBLIC_URL, SECRET_KEY

pytestmark = pytest.mark.anyio


@pytest.fixture
def dev_inbox() -> bool:
    return True


@pytest.fixture
def settings(database_url: str, dev_inbox: bool) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "PUBLIC_URL": PUBLIC_URL,
            "SECRET_KEY": SECRET_KEY,
            "DEV_INBOX": str(dev_inbox).lower(),
        }
    )


async def test_signed_webhooks_are_kept_and_forged_ones_refused(
    client: httpx.AsyncClient, db: Database, brand: BrandKey
) -> None:
    secret = webhooks.new_secret()
    async with db.write() as conn:
        await conn.execute(
            webhook_endpoints.insert().values(
                brand_id=brand.id,
                url="https://track.example.test/dev/webhooks",
                events=["choice.made"],
                secret=secret,
                created_at=dt.datetime.now(dt.UTC),
                updated_at=dt.datetime.now(dt.UTC),
            )
        )
    body = json.dumps({"type": "choice.made", "data": {"order": "A-1"}}).encode()
    stamp = 1_700_000_000
    good = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": webhooks.sign([secret], "msg_1", stamp, body),
    }
    assert (await client.post("/dev/webhooks", content=body, headers=good)).status_code == 204
    forged = {
        **good,
        "webhook-signature": webhooks.sign([webhooks.new_secret()], "msg_1", stamp, body),
    }
    assert (await client.post("/dev/webhooks", content=body, headers=forged)).status_code == 401
    listed = (await client.get("/dev/webhooks.json")).json()["webhooks"]
    assert [(w["webhook_id"], w["verified"]) for w in listed] == [("msg_1", False), ("msg_1", True)]
    assert listed[1]["payload"]["data"] == {"order": "A-1"}


@pytest.mark.parametrize("dev_inbox", [False])
async def test_without_dev_inbox_the_receiver_is_not_there(client: httpx.AsyncClient) -> None:
    assert (await client.post("/dev/webhooks", content=b"{}")).status_code == 404
    assert (await client.get("/dev/webhooks.json")).status_code == 404
