"""The development webhook receiver checks signatures with the registered endpoint's secret."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from app.storage.database import Database
from app.storage.schema import webhook_endpoints
from messaging import webhooks
from tests.conftest import BrandKey

pytestmark = pytest.mark.anyio


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
