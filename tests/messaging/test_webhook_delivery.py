"""Brand webhooks through the outbox: signed, retried while the receiver is down, sent once.

The receiver listens on 127.0.0.1: these tests allow private targets (WEBHOOK_ALLOW_PRIVATE, as
in development) unless they show what happens without.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.settings import Settings
from app.storage.database import Database
from app.storage.schema import messages, webhook_endpoints
from messaging.dispatch import Dispatcher
from messaging.webhooks import new_secret
from tests.conftest import BrandKey
from tests.eta.conftest import FixedClock
from tests.eta.helpers import Api, backordered
from tests.fakes.dns import rebinding_dns
from tests.fakes.server import ServerThread

pytestmark = pytest.mark.anyio


@pytest.fixture
def allow_private() -> bool:
    return True


@pytest.fixture
def settings(database_url: str, allow_private: bool) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "PUBLIC_URL": "https://track.example.test",
            "WEBHOOK_ALLOW_PRIVATE": str(allow_private).lower(),
        }
    )


class FlakyReceiver:
    """A brand's endpoint that answers 503 `down_for` times, then accepts; it checks
    signatures with its own reading of the Standard Webhooks convention."""

    def __init__(self, down_for: int) -> None:
        self.down_for = down_for
        self.secret = ""
        self.attempts: list[dict[str, str]] = []
        self.accepted: list[dict[str, Any]] = []

    def verified(self, headers: Any, body: bytes) -> bool:
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        offered = [part.partition(",")[2] for part in headers["webhook-signature"].split()]
        return any(hmac.compare_digest(expected, sig) for sig in offered)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.attempts.append(dict(request.headers))
        if not self.verified(request.headers, body):
            return Response(status_code=401)
        if len(self.attempts) <= self.down_for:
            return Response(status_code=503)
        self.accepted.append({"id": request.headers["webhook-id"], **json.loads(body)})
        return Response(status_code=204)


@pytest.fixture
def receiver() -> Iterator[tuple[FlakyReceiver, str]]:
    brand_side = FlakyReceiver(down_for=3)
    app = Starlette(routes=[Route("/hooks", brand_side.hook, methods=["POST"])])
    with ServerThread(app) as server:
        yield brand_side, f"{server.url}/hooks"


async def eta_change(api: Api) -> None:
    """Move a supply date under a waiting order: one `order.eta_changed` webhook."""
    await api.sku("LAMP", 0)
    await api.supply("LAMP", "PO-1", 5, "2026-11-20")
    await api.place("W-1", [backordered("1", "LAMP")], customer={"id": "C-1"})
    await api.move("LAMP", "PO-1", expected_date="2026-11-30")


async def test_a_receiver_that_recovers_gets_each_event_once(
    api: Api,
    db: Database,
    clock: FixedClock,
    dispatcher: Dispatcher,
    receiver: tuple[FlakyReceiver, str],
) -> None:
    brand_side, url = receiver
    created = await api.call(
        "POST", "/webhook-endpoints", {"url": url, "events": ["order.eta_changed"]}, 201
    )
    brand_side.secret = created.json()["secret"]
    await eta_change(api)
    for _ in range(6):
        await dispatcher.run_once()
        clock.advance(hours=1)
    assert len(brand_side.attempts) == 4
    # Every retry is the same webhook (receivers dedupe on its id).
    assert len({a["webhook-id"] for a in brand_side.attempts}) == 1
    (event,) = brand_side.accepted
    assert event["type"] == "order.eta_changed"
    assert event["data"]["order"] == "W-1"
    async with db.read() as conn:
        row = (await conn.execute(select(messages).where(messages.c.channel == "webhook"))).one()
    assert row.state == "sent"
    assert row.attempts == 4


@pytest.mark.parametrize("allow_private", [False])
async def test_without_private_targets_a_loopback_receiver_is_not_registered(
    api: Api, receiver: tuple[FlakyReceiver, str]
) -> None:
    _, url = receiver
    response = await api.call(
        "POST", "/webhook-endpoints", {"url": url, "events": ["order.eta_changed"]}, 422
    )
    (error,) = response.json()["errors"]
    assert error["path"] == "url"
    assert "127.0.0.1 is not a public address" in error["message"]


async def register_directly(db: Database, brand: BrandKey, clock: FixedClock, url: str) -> None:
    """Store an endpoint as if registered while its URL passed (private targets allowed)."""
    async with db.write() as conn:
        await conn.execute(
            webhook_endpoints.insert().values(
                brand_id=brand.id,
                url=url,
                events=["order.eta_changed"],
                secret=new_secret(),
                created_at=clock.now - dt.timedelta(days=1),
                updated_at=clock.now - dt.timedelta(days=1),
            )
        )


@pytest.mark.parametrize("allow_private", [False])
async def test_without_private_targets_a_loopback_receiver_gets_nothing(
    api: Api,
    db: Database,
    brand: BrandKey,
    clock: FixedClock,
    dispatcher: Dispatcher,
    receiver: tuple[FlakyReceiver, str],
) -> None:
    # Registered while private targets were allowed (or by a name that now resolves inside).
    brand_side, url = receiver
    await register_directly(db, brand, clock, url)
    await eta_change(api)
    for _ in range(3):
        await dispatcher.run_once()
        clock.advance(hours=1)
    assert brand_side.attempts == []
    async with db.read() as conn:
        row = (await conn.execute(select(messages).where(messages.c.channel == "webhook"))).one()
    # Refused for good on the first attempt, with the reason in the delivery log.
    assert (row.state, row.attempts, row.error_code) == ("failed", 1, "private_address")
    assert "127.0.0.1 is not a public address" in row.error_detail


@pytest.mark.parametrize("allow_private", [False])
async def test_without_private_targets_a_name_rebound_to_loopback_gets_nothing(
    api: Api,
    db: Database,
    brand: BrandKey,
    clock: FixedClock,
    dispatcher: Dispatcher,
    receiver: tuple[FlakyReceiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DNS rebinding through the worker's own HTTP client: the check before the request hears a
    # public address, the connection after it the receiver's loopback one.
    brand_side, url = receiver
    asked = rebinding_dns(monkeypatch, "hooks.brand.example", "93.184.216.34", "127.0.0.1")
    port = httpx.URL(url).port
    await register_directly(db, brand, clock, f"http://hooks.brand.example:{port}/hooks")
    await eta_change(api)
    for _ in range(3):
        await dispatcher.run_once()
        clock.advance(hours=1)
    assert brand_side.attempts == []
    assert asked == ["hooks.brand.example", "hooks.brand.example"]
    async with db.read() as conn:
        row = (await conn.execute(select(messages).where(messages.c.channel == "webhook"))).one()
    assert (row.state, row.attempts, row.error_code) == ("failed", 1, "private_address")
    assert "hooks.brand.example" in row.error_detail
    assert "127.0.0.1" not in row.error_detail
