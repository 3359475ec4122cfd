"""Fulfilment windows: at risk when the ship-by passes the window's end, expired once the day does.

Orders are placed 2026-11-01 10:00 UTC with the default 30-day window: the last day is 12-01.
"""

from __future__ import annotations

import datetime as dt

import pytest

from app.storage import etas
from tests.eta.conftest import START
from tests.eta.helpers import (
    backordered,
    by_order,
    eta_of,
    events_after,
    last_event_id,
    line_of,
    sqlite_only,
    versions,
)

pytestmark = pytest.mark.anyio


def window_news(lines, deadline, action="keep"):
    return {
        "lines": [
            {"line": ref, "sku": sku, "window_end": end, "ship_by": ship_by}
            for ref, sku, end, ship_by in lines
        ],
        "choice_deadline": deadline,
        "default_action": action,
    }


@pytest.fixture
async def late(api):
    """Order 1001 waits on a PO due after its window: 12-05, so ship-by 12-06."""
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 5, "2026-12-05")
    return api


async def test_a_line_shipping_after_the_window_is_at_risk_with_the_choice(late, db, brand):
    api = late
    await api.patch_brand(choice_deadline_days=3, choice_default_action="cancel")
    mark = await last_event_id(db)

    order = await api.place("1001", [backordered("1", "LAMP")])

    assert eta_of(order, "1")["window_state"] == "at_risk"
    assert order["window_end"] == "2026-12-01"
    news = await events_after(db, brand.id, mark)
    assert [e["type"] for e in news] == ["order_created", "window_at_risk"]
    assert news[1]["order"] == "1001"
    assert news[1]["data"] == window_news(
        [("1", "LAMP", "2026-12-01", "2026-12-06")],
        "2026-11-05T23:59:59+00:00",  # the end of the day 3 days from now
        "cancel",
    )
    assert order["version"] == 1

    # Nothing changed: a recompute tells nothing again.
    mark = await last_event_id(db)
    summary = await etas.recompute_brand(db, brand.id, START)
    assert summary.events == 0
    assert await events_after(db, brand.id, mark) == []


@sqlite_only
async def test_window_news_is_told_once_per_line_even_when_the_date_flaps(late, db, brand, clock):
    api = late
    await api.place("1001", [backordered("1", "LAMP")])

    # Still late (ship-by 12-04): the date news is told, the window news is not repeated.
    mark = await last_event_id(db)
    await api.supply("LAMP", "PO-0", 1, "2026-12-03")
    news = await events_after(db, brand.id, mark)
    assert [e["type"] for e in news] == ["supply_added", "eta_changed"]
    assert eta_of(await api.order("1001"), "1")["window_state"] == "at_risk"
    await api.call("DELETE", "/skus/LAMP/supply/PO-0", status=204)

    # Back in time: on track, no window news.
    clock.advance(hours=1)
    mark = await last_event_id(db)
    await api.supply("LAMP", "PO-E", 1, "2026-11-20")
    news = await events_after(db, brand.id, mark)
    assert [e["type"] for e in news] == ["supply_added", "eta_changed"]
    assert eta_of(await api.order("1001"), "1")["window_state"] == "on_track"

    # Late again: the choice offered the first time still stands, so nothing new is told
    # about the window (a supplier date that flaps must not re-offer it again and again).
    clock.advance(hours=1)
    mark = await last_event_id(db)
    await api.call("DELETE", "/skus/LAMP/supply/PO-E", status=204)
    news = await events_after(db, brand.id, mark)
    assert [e["type"] for e in news] == ["supply_removed", "eta_changed"]
    assert eta_of(await api.order("1001"), "1")["window_state"] == "at_risk"


async def test_an_unshipped_line_expires_after_the_windows_last_day(late, db, brand, clock):
    api = late
    await api.place("1001", [backordered("1", "LAMP")])
    await api.place("1002", [backordered("1", "BIKE", 1, "indefinite")])  # no date at all

    # The last day itself still counts.
    clock.set(dt.datetime(2026, 12, 1, 23, 30, tzinfo=dt.UTC))
    mark = await last_event_id(db)
    assert (await etas.recompute_brand(db, brand.id, clock())).events == 0
    assert await events_after(db, brand.id, mark) == []

    clock.set(dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC))
    before = await versions(db, brand.id)
    summary = await etas.recompute_brand(db, brand.id, clock())

    assert (summary.events, summary.orders_bumped) == (2, 2)
    news = await events_after(db, brand.id, mark)
    assert by_order(news, "window_expired") == {
        "1001": window_news(
            [("1", "LAMP", "2026-12-01", "2026-12-06")], "2026-12-09T23:59:59+00:00"
        ),
        "1002": window_news([("1", "BIKE", "2026-12-01", None)], "2026-12-09T23:59:59+00:00"),
    }
    assert len(news) == 2
    assert await versions(db, brand.id) == {n: v + 1 for n, v in before.items()}
    order = await api.order("1001")
    assert eta_of(order, "1")["window_state"] == "expired"
    assert eta_of(await api.order("1002"), "1")["window_state"] == "expired"

    # Expired stays expired: no repeat, whatever triggers the next run.
    clock.advance(days=1)
    mark = await last_event_id(db)
    await api.supply("LAMP", "PO-2", 1, "2026-12-20")
    assert [e["type"] for e in await events_after(db, brand.id, mark)] == ["supply_added"]
    assert (await etas.recompute_brand(db, brand.id, clock())).events == 0


@sqlite_only
async def test_an_api_change_after_the_window_ends_records_the_expiry(late, db, brand, clock):
    api = late
    await api.place("1001", [backordered("1", "LAMP")])
    clock.set(dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC))
    mark = await last_event_id(db)

    await api.supply("LAMP", "PO-2", 3, "2026-12-04")  # earlier than PO-1: ship-by 12-05

    news = await events_after(db, brand.id, mark)
    assert [e["type"] for e in news] == ["supply_added", "eta_changed", "window_expired"]
    assert news[2]["data"] == window_news(
        [("1", "LAMP", "2026-12-01", "2026-12-05")], "2026-12-10T23:59:59+00:00"
    )


async def test_shipped_lines_are_never_at_risk_nor_expired(late, db, brand, clock):
    api = late
    await api.place("1001", [backordered("1", "LAMP", 1), backordered("2", "LAMP", 2)])
    shipment = {
        "ref": "P1",
        "carrier": "ups",
        "tracking_number": "1Z999AA10123456784",
        "lines": [{"line": "1", "quantity": 1}, {"line": "2", "quantity": 1}],
    }
    order = (await api.call("POST", "/orders/1001/shipments", shipment, status=201)).json()
    assert (line_of(order, "1")["status"], line_of(order, "1")["eta"]) == ("shipped", None)
    assert line_of(order, "2")["status"] == "backordered"
    assert eta_of(order, "2")["window_state"] == "at_risk"

    clock.set(dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC))
    mark = await last_event_id(db)
    await etas.recompute_brand(db, brand.id, clock())

    # Only the line with units still waiting expires.
    news = await events_after(db, brand.id, mark)
    assert [(e["type"], [line["line"] for line in e["data"]["lines"]]) for e in news] == [
        ("window_expired", ["2"])
    ]
    order = await api.order("1001")
    assert line_of(order, "1")["eta"] is None


@sqlite_only
async def test_the_window_counts_in_the_brands_calendar(api, db, brand, clock):
    """An order placed 11-02 09:00 in Auckland (11-01 20:00 UTC) is promised until 12-02 there."""
    await api.patch_brand(timezone="Pacific/Auckland")
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 5, "2026-12-20")
    order = await api.place("1001", [backordered("1", "LAMP")], placed_at="2026-11-01T20:00:00Z")
    assert order["window_end"] == "2026-12-02"

    # 12-02 13:00 in Auckland: the promise's last day, not yet expired.
    clock.set(dt.datetime(2026, 12, 2, 0, 0, tzinfo=dt.UTC))
    mark = await last_event_id(db)
    await etas.recompute_brand(db, brand.id, clock())
    assert [e["type"] for e in await events_after(db, brand.id, mark)] == []
    assert eta_of(await api.order("1001"), "1")["window_state"] == "at_risk"
