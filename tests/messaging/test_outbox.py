"""News from domain events lands in the outbox in the same transaction, once, coalesced."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from app.storage import choices as choice_store
from app.storage.database import Database
from tests.eta.helpers import Api, backordered, in_stock
from tests.messaging.conftest import START, outbox

pytestmark = pytest.mark.anyio

SHOPPER = {
    "email": "ada@example.com",
    "phone": "+14155550123",
    "locale": "fr-FR",
    "timezone": "America/Los_Angeles",
    "sms_consent": True,
}


def _triggers(message: dict[str, Any]) -> list[str]:
    return [n["trigger"] for n in message["news"]]


async def _place(api: Api, number: str = "A-1", **extra: Any) -> dict[str, Any]:
    lines = [in_stock("1", "MUG", 1), backordered("2", "LAMP", 1)]
    return await api.place(number, lines, customer=SHOPPER, **extra)


async def test_a_backorder_queues_one_message_per_channel_in_the_shoppers_language(
    api: Api, db: Database
) -> None:
    await api.sku("LAMP", 0)
    await api.supply("LAMP", "PO-1", 5, "2026-11-20")
    await _place(api)
    queued = await outbox(db)
    assert [(m["channel"], m["address"]) for m in queued] == [
        ("email", "ada@example.com"),
        ("sms", "+14155550123"),
    ]
    for message in queued:
        assert message["state"] == "queued"
        assert message["locale"] == "fr-FR"
        assert message["timezone"] == "America/Los_Angeles"
        assert _triggers(message) == ["backordered"]
        # The brand's default coalescing window: news within 10 minutes goes out together.
        assert message["due_at"] == START + dt.timedelta(minutes=10)


async def test_sending_the_same_order_again_queues_nothing_new(api: Api, db: Database) -> None:
    await _place(api)
    before = await outbox(db)
    await _place(api)
    assert await outbox(db) == before


async def test_news_within_the_window_joins_the_open_message(api: Api, db: Database) -> None:
    await api.sku("LAMP", 0)
    await api.supply("LAMP", "PO-1", 5, "2026-11-20")
    await _place(api)
    await api.move("LAMP", "PO-1", expected_date="2026-11-27")
    await api.call(
        "POST",
        "/orders/A-1/shipments",
        {
            "ref": "P1",
            "carrier": "ups",
            "tracking_number": "1Z1",
            "status": "in_transit",
            "lines": [{"line": "1", "quantity": 1}],
        },
        201,
    )
    queued = await outbox(db)
    assert len(queued) == 2
    for message in queued:
        # One message per channel carries every change, in the order they happened.
        assert _triggers(message) == ["backordered", "eta_changed", "partial_shipment"]


async def test_a_trigger_goes_only_where_the_brand_wants_it(api: Api, db: Database) -> None:
    await api.patch_brand(message_triggers={"backordered": ["sms"], "partial_shipment": []})
    await _place(api)
    assert [m["channel"] for m in await outbox(db)] == ["sms"]


async def test_first_reachable_channel_only(api: Api, db: Database) -> None:
    await api.patch_brand(
        message_fanout="first", message_triggers={"backordered": ["sms", "email"]}
    )
    shopper = {**SHOPPER, "sms_consent": False}
    await api.place("A-2", [backordered("1", "LAMP")], customer=shopper)
    # No SMS consent: the first channel the shopper can receive is email.
    assert [m["channel"] for m in await outbox(db)] == ["email"]


async def test_sms_planned_in_quiet_hours_waits_for_the_morning(
    api: Api, db: Database, clock: Any
) -> None:
    # 05:00 UTC is 21:00 in Los Angeles (PST, UTC-8): quiet until 08:00 local, 16:00 UTC.
    clock.set(dt.datetime(2026, 11, 3, 5, 0, tzinfo=dt.UTC))
    await _place(api)
    by_channel = {m["channel"]: m for m in await outbox(db)}
    assert by_channel["email"]["due_at"] == dt.datetime(2026, 11, 3, 5, 10, tzinfo=dt.UTC)
    assert by_channel["sms"]["due_at"] == dt.datetime(2026, 11, 3, 16, 0, tzinfo=dt.UTC)


async def test_a_duplicated_carrier_scan_is_news_once(api: Api, db: Database) -> None:
    await _place(api)
    await api.call(
        "POST",
        "/orders/A-1/shipments",
        {
            "ref": "P1",
            "carrier": "ups",
            "tracking_number": "1Z1",
            "status": "in_transit",
            "lines": [{"line": "1", "quantity": 1}],
        },
        201,
    )
    scan = {
        "occurred_at": "2026-11-02T17:00:00Z",
        "status": "exception",
        "description": "Address unreadable",
    }
    for _ in range(2):
        await api.call("POST", "/orders/A-1/shipments/P1/checkpoints", scan, None)
    email = next(m for m in await outbox(db) if m["channel"] == "email")
    assert _triggers(email).count("shipment_exception") == 1


async def test_a_late_carrier_date_is_a_delay(api: Api, db: Database) -> None:
    await _place(api)
    await api.call(
        "POST",
        "/orders/A-1/shipments",
        {
            "ref": "P1",
            "carrier": "ups",
            "tracking_number": "1Z1",
            "status": "in_transit",
            "promised_date": "2026-11-05",
            "lines": [{"line": "1", "quantity": 1}],
        },
        201,
    )
    await api.call("PATCH", "/orders/A-1/shipments/P1", {"carrier_eta": "2026-11-08"})
    email = next(m for m in await outbox(db) if m["channel"] == "email")
    delay = next(n for n in email["news"] if n["trigger"] == "shipment_delayed")
    assert delay["data"] == {
        "shipment": "P1",
        "promised": "2026-11-05",
        "carrier_eta": "2026-11-08",
    }


async def test_no_customer_contact_means_no_message(api: Api, db: Database) -> None:
    await api.place("A-3", [backordered("1", "LAMP")], customer={"id": "C-9", "name": "Anon"})
    assert await outbox(db) == []


async def test_a_default_at_the_deadline_is_confirmed_to_the_shopper(
    api: Api, db: Database, clock: Any
) -> None:
    await api.sku("LAMP", 0)
    await api.supply("LAMP", "PO-1", 5, "2026-12-20")  # after the window: at risk at once
    await api.place("A-9", [backordered("1", "LAMP")], customer=SHOPPER)
    async with db.write() as conn:
        applied = await choice_store.apply_deadlines(conn, clock.now + dt.timedelta(days=30))
    assert applied == 1
    email = [m for m in await outbox(db) if m["channel"] == "email"]
    confirmed = [n for m in email for n in m["news"] if n["trigger"] == "choice_confirmed"]
    assert len(confirmed) == 1
    assert confirmed[0]["data"]["defaulted"] is True
    assert confirmed[0]["data"]["decision"] == "keep"
