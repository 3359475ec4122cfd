"""The brand's ETA policy: reading it, and changes that re-date every waiting line.

1001 waits on LAMP (PO-1 11-20: ship-by 11-21), 1002 on MUG (PO-M 11-25: ship-by 11-26) and
ships to US-HI, 1003 on BIKE, which has no supply (undated).
"""

from __future__ import annotations

import pytest

from tests.eta.helpers import (
    backordered,
    by_order,
    delivery,
    eta_of,
    events_after,
    last_event_id,
    sqlite_only,
    versions,
)

pytestmark = pytest.mark.anyio

DEFAULTS = {
    "slug": "acme",
    "name": "Acme",
    "timezone": "UTC",
    "default_locale": "en",
    "fulfillment_window_days": 30,
    "consolidation_window_days": 3,
    "handling_days": 1,
    "transit_days_min": 2,
    "transit_days_max": 5,
    "transit_by_region": {},
    "eta_change_threshold_days": 1,
    "confidence_widening_days": 10,
    "preorders_own_queue": True,
    "choice_deadline_days": 7,
    "choice_default_action": "keep",
    "quiet_hours_start": "21:00",
    "quiet_hours_end": "08:00",
    "logo_url": None,
    "support_email": None,
    "support_phone": None,
    "support_url": None,
}


@pytest.fixture
async def waiting(api):
    await api.sku("LAMP")
    await api.sku("MUG")
    await api.supply("LAMP", "PO-1", 5, "2026-11-20")
    await api.supply("MUG", "PO-M", 5, "2026-11-25")
    await api.place("1001", [backordered("1", "LAMP")])
    await api.place("1002", [backordered("1", "MUG")], shipping={"region": "US-HI"})
    await api.place("1003", [backordered("1", "BIKE", 1, "indefinite")])
    return api


def moved(sku, direction, shift, old, new):
    return {
        "lines": [
            {
                "line": "1",
                "sku": sku,
                "direction": direction,
                "shift_days": shift,
                "old": {"ship_by": old[0], "delivery": [old[1], old[2]]},
                "new": {"ship_by": new[0], "delivery": [new[1], new[2]]},
            }
        ]
    }


def policy(settings):
    """Keep the settings this suite is about (the brand has others, e.g. for its page)."""
    return {name: settings[name] for name in DEFAULTS}


async def test_get_brand_returns_the_settings(api):
    response = await api.call("GET", "/brand")
    assert policy(response.json()) == DEFAULTS

    changed = await api.patch_brand(handling_days=2, transit_by_region={"US-HI": [4, 9]})
    assert policy(changed) == {
        **DEFAULTS,
        "handling_days": 2,
        "transit_by_region": {"US-HI": [4, 9]},
    }
    assert (await api.call("GET", "/brand")).json() == changed


async def test_handling_days_redate_every_waiting_line(waiting, db, brand):
    api = waiting
    before = await versions(db, brand.id)
    mark = await last_event_id(db)

    await api.patch_brand(handling_days=3)

    assert eta_of(await api.order("1001"), "1")["ship_by"] == "2026-11-23"
    assert eta_of(await api.order("1001"), "1")["delivery"] == delivery("2026-11-25", "2026-11-28")
    assert eta_of(await api.order("1002"), "1")["ship_by"] == "2026-11-28"
    news = await events_after(db, brand.id, mark)
    assert (news[0]["type"], news[0]["order"]) == ("brand_updated", None)
    assert "handling_days" in news[0]["data"]["changes"]
    assert by_order(news, "eta_changed") == {
        "1001": moved(
            "LAMP",
            "later",
            2,
            ("2026-11-21", "2026-11-23", "2026-11-26"),
            ("2026-11-23", "2026-11-25", "2026-11-28"),
        ),
        "1002": moved(
            "MUG",
            "later",
            2,
            ("2026-11-26", "2026-11-28", "2026-12-01"),
            ("2026-11-28", "2026-11-30", "2026-12-03"),
        ),
    }
    assert len(news) == 3
    # The undated line did not change: its order keeps its version.
    assert await versions(db, brand.id) == {
        "1001": before["1001"] + 1,
        "1002": before["1002"] + 1,
        "1003": before["1003"],
    }

    # The same value again changes nothing.
    mark = await last_event_id(db)
    await api.patch_brand(handling_days=3)
    assert await events_after(db, brand.id, mark) == []


async def test_a_shorter_window_puts_lines_at_risk(waiting, db, brand):
    api = waiting
    before = await versions(db, brand.id)
    mark = await last_event_id(db)

    await api.patch_brand(fulfillment_window_days=22)  # last day 11-23

    first, second = await api.order("1001"), await api.order("1002")
    assert first["window_end"] == "2026-11-23"
    assert eta_of(first, "1")["window_state"] == "on_track"  # ship-by 11-21
    assert eta_of(second, "1")["window_state"] == "at_risk"  # ship-by 11-26
    news = await events_after(db, brand.id, mark)
    assert [e["type"] for e in news] == ["brand_updated", "window_at_risk"]
    assert news[1]["order"] == "1002"
    assert news[1]["data"] == {
        "lines": [{"line": "1", "sku": "MUG", "window_end": "2026-11-23", "ship_by": "2026-11-26"}],
        "choice_deadline": "2026-11-09T23:59:59+00:00",
        "default_action": "keep",
    }
    assert (await versions(db, brand.id))["1002"] == before["1002"] + 1


@sqlite_only
async def test_transit_changes_move_delivery_ranges_quietly(waiting, db, brand):
    api = waiting
    before = await versions(db, brand.id)
    mark = await last_event_id(db)

    await api.patch_brand(
        transit_days_min=3, transit_days_max=7, transit_by_region={"US-HI": [6, 12]}
    )

    assert eta_of(await api.order("1001"), "1")["delivery"] == delivery("2026-11-24", "2026-11-28")
    assert eta_of(await api.order("1002"), "1")["delivery"] == delivery("2026-12-02", "2026-12-08")
    # Ship-by dates did not move, so there is no news, but the pages changed.
    assert [e["type"] for e in await events_after(db, brand.id, mark)] == ["brand_updated"]
    assert await versions(db, brand.id) == {
        "1001": before["1001"] + 1,
        "1002": before["1002"] + 1,
        "1003": before["1003"],
    }


@sqlite_only
async def test_preorders_join_the_stock_queue_when_the_brand_says_so(api, db, brand):
    await api.sku("GAME")
    await api.supply("GAME", "PO-1", 1, "2026-11-20")
    await api.supply("GAME", "PO-2", 1, "2026-11-27")
    await api.place("1001", [backordered("1", "GAME", 1)], placed_at="2026-11-01T08:00:00Z")
    await api.place("1002", [backordered("1", "GAME", 1, "preorder")])
    mark = await last_event_id(db)

    await api.patch_brand(preorders_own_queue=False)

    standard = eta_of(await api.order("1001"), "1")
    preorder = eta_of(await api.order("1002"), "1")
    assert (standard["queue"], standard["queue_position"], standard["supply_ref"]) == (
        "stock",
        1,
        "PO-1",
    )
    assert (preorder["queue"], preorder["queue_position"], preorder["supply_ref"]) == (
        "stock",
        2,
        "PO-2",
    )
    changed = by_order(await events_after(db, brand.id, mark), "eta_changed")
    assert {n: e["lines"][0]["direction"] for n, e in changed.items()} == {
        "1001": "earlier",
        "1002": "later",
    }


@sqlite_only
async def test_the_timezone_decides_today(api, db, brand):
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 5, "2026-11-02")  # due today (UTC)
    order = await api.place("1001", [backordered("1", "LAMP")])
    assert eta_of(order, "1")["available_from"] == "2026-11-02"
    mark = await last_event_id(db)

    # 12:00 UTC is already 11-03 02:00 at UTC+14: the overdue PO can only come from today on.
    await api.patch_brand(timezone="Pacific/Kiritimati")

    eta = eta_of(await api.order("1001"), "1")
    assert (eta["available_from"], eta["ship_by"]) == ("2026-11-03", "2026-11-04")
    assert by_order(await events_after(db, brand.id, mark), "eta_changed") == {
        "1001": moved(
            "LAMP",
            "later",
            1,
            ("2026-11-03", "2026-11-05", "2026-11-08"),
            ("2026-11-04", "2026-11-06", "2026-11-09"),
        )
    }
