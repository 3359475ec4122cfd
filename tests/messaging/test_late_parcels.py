"""Late parcels, found by the clock: a date that passed, or a carrier that stopped scanning."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.domain.parcels import lateness
from app.settings import Settings
from app.storage import late_parcels
from app.storage.database import Database
from app.storage.schema import events, messages, shipments, webhook_endpoints
from messaging.dispatch import Dispatcher
from messaging.webhooks import new_secret
from tests.api.helpers import assert_problem
from tests.conftest import BrandKey
from tests.eta.conftest import FixedClock
from tests.eta.helpers import Api, in_stock
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio
from tests.messaging.conftest import SHOPPER, make_dispatcher, outbox

pytestmark = pytest.mark.anyio

DAY = dt.timedelta(days=1)
NOON = dt.time(12, 0)


def at(day: str, time: dt.time = NOON) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), time, tzinfo=dt.UTC)


async def _ship(api: Api, number: str = "A-1", placed: str | None = None, **parcel: Any) -> None:
    """An order of one mug, sent at once in parcel P1 (on its way, shipped at 2026-11-02)."""
    await api.sku("MUG", 10)
    when = {"placed_at": placed} if placed else {}
    await api.place(number, [in_stock("1", "MUG", 1)], customer=SHOPPER, **when)
    body = {
        "ref": "P1",
        "carrier": "ups",
        "tracking_number": f"1Z{number}",
        "status": "in_transit",
        "shipped_at": "2026-11-02T17:00:00Z",
        "lines": [{"line": "1", "quantity": 1}],
        **parcel,
    }
    await api.call("POST", f"/orders/{number}/shipments", body, 201)


async def _scan(api: Api, when: str, status: str, description: str) -> None:
    """A carrier scan of A-1's parcel."""
    scan = {"occurred_at": when, "status": status, "description": description}
    await api.call("POST", "/orders/A-1/shipments/P1/checkpoints", scan, 201)


async def _late_news(db: Database) -> list[dict[str, Any]]:
    """The time-found delays filed for the shopper, by email (one per piece of news)."""
    return [
        news["data"]
        for message in await outbox(db)
        if message["channel"] == "email"
        for news in message["news"]
        if news["trigger"] == "shipment_delayed" and "reason" in news["data"]
    ]


async def _all_news(db: Database) -> list[dict[str, Any]]:
    return [
        {"trigger": news["trigger"], **news["data"]}
        for message in await outbox(db)
        if message["channel"] == "email"
        for news in message["news"]
    ]


async def _sweep(db: Database, now: dt.datetime) -> int:
    async with db.write() as conn:
        return await late_parcels.tell_late_parcels(conn, now)


# The rule ------------------------------------------------------------------------------------

MOVED = at("2026-11-02")
TODAY = dt.date(2026, 11, 10)


def _rule(**given: Any) -> Any:
    facts: dict[str, Any] = {
        "status": "in_transit",
        "promised": None,
        "carrier_eta": None,
        "last_move": MOVED,
        "late_for": None,
        "late_told_at": None,
        "today": TODAY,
        "now": at("2026-11-10"),
        "stall_after": 4 * DAY,
    }
    return lateness(**{**facts, **given})


def test_a_passed_date_is_late_once_and_a_later_date_that_passes_again() -> None:
    late = _rule(promised=dt.date(2026, 11, 9), last_move=at("2026-11-08"))
    assert (late.reason, late.due, late.late_for) == ("overdue", dt.date(2026, 11, 9), late.due)
    told = {"late_for": dt.date(2026, 11, 9), "late_told_at": at("2026-11-10")}
    assert _rule(promised=dt.date(2026, 11, 9), **told) is None
    # The carrier's later date counts: it is the last one the shopper was given.
    recent = {"last_move": at("2026-11-09")}
    assert _rule(promised=dt.date(2026, 11, 5), carrier_eta=dt.date(2026, 11, 10), **recent) is None
    again = _rule(
        promised=dt.date(2026, 11, 5),
        carrier_eta=dt.date(2026, 11, 8),
        late_for=dt.date(2026, 11, 5),
        last_move=at("2026-11-08"),
    )
    assert (again.reason, again.due) == ("overdue", dt.date(2026, 11, 8))
    # The day itself is not late yet.
    assert _rule(promised=TODAY, last_move=at("2026-11-09")) is None


def test_a_stall_is_told_once_per_movement_and_not_after_a_delay_already_told() -> None:
    assert _rule(last_move=at("2026-11-06", dt.time(12, 1))) is None  # under 4 days
    stalled = _rule(last_move=at("2026-11-06"))
    assert (stalled.reason, stalled.due, stalled.late_for) == ("stalled", None, None)
    assert _rule(last_move=at("2026-11-06"), late_told_at=at("2026-11-06")) is None
    assert _rule(last_move=at("2026-11-06"), late_told_at=at("2026-11-05")).reason == "stalled"
    # Told late on the 7th (no scan since the 2nd): the stall is the same news.
    told = {"late_for": dt.date(2026, 11, 6), "late_told_at": at("2026-11-07")}
    assert _rule(promised=dt.date(2026, 11, 6), **told) is None
    # A stall keeps the date told before it: the marker is for dates that passed.
    ahead = _rule(promised=dt.date(2026, 11, 20), late_for=dt.date(2026, 11, 1))
    assert (ahead.reason, ahead.due, ahead.late_for) == (
        "stalled",
        dt.date(2026, 11, 20),
        dt.date(2026, 11, 1),
    )


def test_only_parcels_not_yet_delivered_are_late_and_only_moving_ones_stall() -> None:
    for status in ("delivered", "exception", "lost", "returned"):
        assert _rule(status=status, promised=dt.date(2026, 11, 3)) is None
    assert _rule(status="label_created") is None  # not with the carrier yet: nothing to scan
    assert _rule(status="label_created", promised=dt.date(2026, 11, 3)).reason == "overdue"
    assert _rule(status="out_for_delivery").reason == "stalled"


def test_lateness_older_than_a_week_is_stale_data_not_news() -> None:
    assert _rule(promised=TODAY - 7 * DAY, last_move=at("2026-11-09")).reason == "overdue"
    assert _rule(promised=TODAY - 8 * DAY, last_move=at("2026-11-09")) is None
    assert _rule(last_move=at("2026-10-30")).reason == "stalled"  # 4 + 7 days ago
    assert _rule(last_move=at("2026-10-30", dt.time(11, 59))) is None


# The sweep, with the shopper's messages and the brand's webhook -------------------------------


async def test_a_parcel_past_its_date_is_told_once_then_again_for_a_new_date(
    api: Api, db: Database, clock: FixedClock, dispatcher: Dispatcher, sendgrid: FakeSendGrid
) -> None:
    await _ship(api, promised_date="2026-11-05")
    # Scanned on the 5th: no stall, the date alone makes it late.
    await _scan(api, "2026-11-05T09:00:00Z", "in_transit", "Hub")
    clock.set(at("2026-11-05", dt.time(23, 59)))
    await dispatcher.run_once()
    assert await _late_news(db) == []
    clock.set(at("2026-11-06", dt.time(0, 10)))  # the next sweep, ten minutes on
    await dispatcher.run_once()
    overdue = {"shipment": "P1", "promised": "2026-11-05", "carrier_eta": None, "reason": "overdue"}
    assert await _late_news(db) == [overdue]
    clock.advance(minutes=11)
    await dispatcher.run_once()  # the news goes out after the coalescing window
    (mail,) = sendgrid.received
    text = next(c["value"] for c in mail.body["content"] if c["type"] == "text/plain")
    assert "The carrier has not given a new date yet." in text
    assert "Promised for Nov 5, 2026" in text
    # Swept again (a worker restarted, another one): nothing new.
    assert await _sweep(db, clock.now + 30 * dt.timedelta(minutes=1)) == 0
    assert await _late_news(db) == [overdue]
    # The carrier gives a later date (news of its own when it comes), and misses it too.
    await api.call("PATCH", "/orders/A-1/shipments/P1", {"carrier_eta": "2026-11-08"})
    await _scan(api, "2026-11-08T09:00:00Z", "in_transit", "Hub")
    assert await _sweep(db, at("2026-11-08", dt.time(23, 0))) == 0
    assert await _sweep(db, at("2026-11-09", dt.time(1, 0))) == 1
    assert (await _late_news(db))[-1] == {**overdue, "promised": "2026-11-08"}


async def test_late_is_after_the_day_ends_where_the_brand_is(api: Api, db: Database) -> None:
    await api.patch_brand(timezone="America/Los_Angeles")
    await _ship(api, promised_date="2026-11-05")
    # 2026-11-06 05:00 UTC is still the 5th, 21:00, in Los Angeles.
    assert await _sweep(db, at("2026-11-06", dt.time(5, 0))) == 0
    assert await _sweep(db, at("2026-11-06", dt.time(8, 5))) == 1


async def test_a_parcel_without_scans_stalls_once_per_movement(
    api: Api,
    db: Database,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
    clock: FixedClock,
    dispatcher: Dispatcher,
) -> None:
    await _ship(api)  # no promised date: only a stall can make it late
    assert await _sweep(db, at("2026-11-06", dt.time(16, 59))) == 0  # 4 days less a minute
    clock.set(at("2026-11-06", dt.time(17, 0)))
    await dispatcher.run_once()
    stalled = {
        "shipment": "P1",
        "promised": None,
        "carrier_eta": None,
        "quiet_since": "2026-11-02T17:00:00+00:00",
        "reason": "stalled",
    }
    assert await _late_news(db) == [stalled]
    clock.advance(minutes=11)
    await dispatcher.run_once()
    (sms,) = twilio.received
    assert "A parcel from order A-1 is delayed.\nWe are following it closely." in sms.form["Body"]
    (mail,) = sendgrid.received
    text = next(c["value"] for c in mail.body["content"] if c["type"] == "text/plain")
    # The shopper's day of the carrier's last news (9:00 in Los Angeles).
    assert "No news from the carrier since Nov 2, 2026.\nThe carrier has not given" in text
    html = next(c["value"] for c in mail.body["content"] if c["type"] == "text/html")
    assert "No news from the carrier since Nov 2, 2026." in html
    assert await _sweep(db, at("2026-11-20")) == 0  # still no scan: told already
    # It moves, then stops again: a new stall.
    await _scan(api, "2026-11-20T10:00:00Z", "in_transit", "Moved")
    assert await _sweep(db, at("2026-11-23")) == 0
    assert await _sweep(db, at("2026-11-24", dt.time(10, 0))) == 1
    assert await _late_news(db) == [
        stalled,
        {**stalled, "quiet_since": "2026-11-20T10:00:00+00:00"},
    ]
    # Delivered: never late again.
    await _scan(api, "2026-11-25T10:00:00Z", "delivered", "Left")
    assert await _sweep(db, at("2026-12-30")) == 0


async def test_a_carrier_delay_told_since_the_last_scan_is_not_told_again_as_a_stall(
    api: Api, db: Database, clock: FixedClock
) -> None:
    await _ship(api, promised_date="2026-11-05")
    # The carrier's later date is news when it comes (2026-11-02 18:00, after the parcel left).
    await api.call("PATCH", "/orders/A-1/shipments/P1", {"carrier_eta": "2026-11-12"})
    delay = {"shipment": "P1", "promised": "2026-11-05", "carrier_eta": "2026-11-12"}
    assert [n for n in await _all_news(db) if n["trigger"] == "shipment_delayed"] == [
        {"trigger": "shipment_delayed", **delay}
    ]
    assert await _sweep(db, at("2026-11-09")) == 0  # a week without a scan: the same news
    await _scan(api, "2026-11-08T10:00:00Z", "in_transit", "Moved")
    assert await _sweep(db, at("2026-11-12", dt.time(9, 59))) == 0
    # Moved since, and stopped again: news, with the carrier's date still ahead.
    assert await _sweep(db, at("2026-11-12", dt.time(10, 0))) == 1
    assert await _late_news(db) == [
        {**delay, "quiet_since": "2026-11-08T10:00:00+00:00", "reason": "stalled"}
    ]


async def test_an_upgrade_does_not_tell_a_backlog_of_old_parcels(api: Api, db: Database) -> None:
    """Parcels an integration never marked delivered are not news a month later."""
    old = {"placed": "2026-09-27T10:00:00Z", "shipped_at": "2026-09-28T10:00:00Z"}
    await _ship(api, number="OLD", promised_date="2026-10-01", **old)
    await _ship(api, number="NEW", promised_date="2026-11-05")
    assert await _sweep(db, at("2026-11-10")) == 1
    async with db.read() as conn:
        (told,) = (
            await conn.execute(select(events.c.data).where(events.c.type == "shipment_late"))
        ).all()
    assert told.data["tracking_number"] == "1ZNEW"


async def test_each_brand_has_its_own_stall_threshold(
    api: Api, client: httpx.AsyncClient, db: Database, other_brand: BrandKey
) -> None:
    other = Api(client, other_brand)
    await other.patch_brand(stall_after_days=10)
    assert (await api.patch_brand(stall_after_days=2))["stall_after_days"] == 2
    await _ship(api)
    await _ship(other)
    assert await _sweep(db, at("2026-11-04", dt.time(17, 0))) == 1  # the first brand's, at 2 days
    assert await _sweep(db, at("2026-11-11")) == 0
    assert await _sweep(db, at("2026-11-12", dt.time(17, 0))) == 1  # the other's, at 10
    async with db.read() as conn:
        told = await conn.execute(select(events.c.brand_id).where(events.c.type == "shipment_late"))
        assert sorted(r.brand_id for r in told) == sorted([api.brand.id, other_brand.id])


@pytest.mark.parametrize("days", [0, 31, "4", None])
async def test_a_stall_threshold_out_of_range_is_refused(api: Api, days: Any) -> None:
    response = await api.call("PATCH", "/brand", {"stall_after_days": days}, 422)
    assert_problem(response, 422, "invalid-fields", ["stall_after_days"])
    assert (await api.call("GET", "/brand")).json()["stall_after_days"] == 4


async def test_the_brand_gets_a_shipment_late_webhook_without_personal_data(
    api: Api, db: Database, brand: BrandKey, clock: FixedClock
) -> None:
    async with db.write() as conn:
        await conn.execute(
            webhook_endpoints.insert().values(
                brand_id=brand.id,
                url="https://hooks.example/late",
                events=["shipment.late"],
                secret=new_secret(),
                created_at=clock.now,
                updated_at=clock.now,
            )
        )
    await _ship(api, promised_date="2026-11-05")
    assert await _sweep(db, at("2026-11-07")) == 1
    async with db.read() as conn:
        (hook,) = await conn.execute(select(messages).where(messages.c.channel == "webhook"))
    assert hook.content["type"] == "shipment.late"
    body = json.loads(hook.content["body"])
    assert body["type"] == "shipment.late"
    assert body["data"] == {
        "order": "A-1",
        "shipment": "P1",
        "reason": "overdue",
        "due": "2026-11-05",
        "promised_date": "2026-11-05",
        "carrier_eta": None,
        "last_scan_at": "2026-11-02T17:00:00+00:00",
        "status": "in_transit",
        "carrier": "ups",
        "tracking_number": "1ZA-1",
    }
    assert "ada" not in hook.content["body"].lower()
    assert "415555" not in hook.content["body"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_workers_sweeping_at_once_tell_each_parcel_once(
    api: Api,
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    for n in range(30):
        await _ship(api, number=f"B-{n}", promised_date="2026-11-05")
    clock.set(at("2026-11-07"))
    workers = [
        make_dispatcher(db, settings, clock, twilio, sendgrid, name=f"w{i}") for i in range(3)
    ]
    try:
        await asyncio.gather(*(w._late_parcels(clock.now) for w in workers))
    finally:
        for worker in workers:
            await worker.aclose()
    async with db.read() as conn:
        told = (
            await conn.execute(select(events.c.order_id).where(events.c.type == "shipment_late"))
        ).all()
        marked = (await conn.execute(select(shipments.c.late_for))).scalars().all()
    assert len(told) == len({r.order_id for r in told}) == 30
    assert set(marked) == {dt.date(2026, 11, 5)}
