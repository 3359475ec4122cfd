"""Moving inbound supply re-dates exactly the lines it serves and tells each order once.

LAMP has PO-1 (3 units, 11-20) and PO-2 (10 units, 11-25); MUG has PO-M (11-18).
1001/1 (2 LAMP) and 1002/1 (1 LAMP) take PO-1; 1002/2 and 1003/1-2 take PO-2; 1004 waits on MUG.
"""

from __future__ import annotations

import pytest

from tests.api.helpers import snapshot
from tests.eta.helpers import (
    backordered,
    by_order,
    eta_of,
    events_after,
    last_event_id,
    versions,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def queued(api):
    await api.sku("LAMP")
    await api.sku("MUG")
    await api.supply("LAMP", "PO-1", 3, "2026-11-20")
    await api.supply("LAMP", "PO-2", 10, "2026-11-25")
    await api.supply("MUG", "PO-M", 5, "2026-11-18")
    await api.place("1001", [backordered("1", "LAMP", 2)], placed_at="2026-11-01T10:00:00Z")
    await api.place(
        "1002",
        [backordered("1", "LAMP", 1), backordered("2", "LAMP", 1)],
        placed_at="2026-11-01T11:00:00Z",
    )
    await api.place(
        "1003",
        [backordered("1", "LAMP", 1), backordered("2", "LAMP", 2)],
        placed_at="2026-11-01T12:00:00Z",
    )
    await api.place("1004", [backordered("1", "MUG", 1)], placed_at="2026-11-01T12:00:00Z")
    return api


def change(line, direction, shift, old, new):
    """Return one line's entry in an `eta_changed` event; old/new are (ship_by, from, to)."""

    def side(dates):
        if dates is None:
            return {"ship_by": None, "delivery": None}
        return {"ship_by": dates[0], "delivery": [dates[1], dates[2]]}

    return {
        "line": line,
        "sku": "LAMP",
        "direction": direction,
        "shift_days": shift,
        "old": side(old),
        "new": side(new),
    }


ON_25 = ("2026-11-26", "2026-11-28", "2026-12-01")  # PO-2 on 11-25
ON_30 = ("2026-12-01", "2026-12-03", "2026-12-06")  # PO-2 on 11-30


async def orders(api, numbers=("1001", "1002", "1003", "1004")):
    return {number: await api.order(number) for number in numbers}


async def test_moving_a_po_redates_only_its_lines_and_tells_each_order_once(queued, db, brand):
    api = queued
    before = await orders(api)
    versions_before = await versions(db, brand.id)
    mark = await last_event_id(db)

    moved = await api.move("LAMP", "PO-2", expected_date="2026-11-30")

    assert moved["expected_date"] == "2026-11-30"
    after = await orders(api)
    # Lines on other supply keep their dates, and their orders keep their versions.
    assert after["1001"] == before["1001"]
    assert after["1004"] == before["1004"]
    assert eta_of(after["1002"], "1") == eta_of(before["1002"], "1")
    for number, ref in (("1002", "2"), ("1003", "1"), ("1003", "2")):
        eta = eta_of(after[number], ref)
        assert (eta["ship_by"], eta["delivery"], eta["supply_ref"], eta["window_state"]) == (
            "2026-12-01",
            {"earliest": "2026-12-03", "latest": "2026-12-06"},
            "PO-2",
            "on_track",  # ship-by on the window's last day is still in time
        )
    assert await versions(db, brand.id) == {
        **versions_before,
        "1002": versions_before["1002"] + 1,
        "1003": versions_before["1003"] + 1,
    }
    assert after["1002"]["version"] == versions_before["1002"] + 1

    news = await events_after(db, brand.id, mark)
    assert sorted(e["type"] for e in news) == ["eta_changed", "eta_changed", "supply_changed"]
    assert news[0] == {
        "type": "supply_changed",
        "order": None,
        "data": {
            "sku": "LAMP",
            "ref": "PO-2",
            "old": {"expected_date": "2026-11-25"},
            "new": {"expected_date": "2026-11-30"},
        },
    }
    assert by_order(news, "eta_changed") == {
        "1002": {"lines": [change("2", "later", 5, ON_25, ON_30)]},
        "1003": {
            "lines": [
                change("1", "later", 5, ON_25, ON_30),
                change("2", "later", 5, ON_25, ON_30),
            ]
        },
    }

    # Moving it back tells the reverse, once.
    mark = await last_event_id(db)
    await api.move("LAMP", "PO-2", expected_date="2026-11-25")
    news = await events_after(db, brand.id, mark)
    assert sorted(e["type"] for e in news) == ["eta_changed", "eta_changed", "supply_changed"]
    assert by_order(news, "eta_changed") == {
        "1002": {"lines": [change("2", "earlier", -5, ON_30, ON_25)]},
        "1003": {
            "lines": [
                change("1", "earlier", -5, ON_30, ON_25),
                change("2", "earlier", -5, ON_30, ON_25),
            ]
        },
    }
    assert await orders(api, ("1001", "1004")) == {n: before[n] for n in ("1001", "1004")}
    back = await versions(db, brand.id)
    assert back == {
        **versions_before,
        "1002": versions_before["1002"] + 2,
        "1003": versions_before["1003"] + 2,
    }
    # Every date is where it started.
    for number in ("1002", "1003"):
        now = await api.order(number)
        assert [line["eta"] for line in now["lines"]] == [
            line["eta"] for line in before[number]["lines"]
        ]


async def test_small_moves_stay_quiet_until_they_add_up_past_the_threshold(queued, db, brand):
    api = queued
    mark = await last_event_id(db)
    versions_before = await versions(db, brand.id)
    settings = await api.patch_brand(eta_change_threshold_days=3)
    assert settings["eta_change_threshold_days"] == 3
    assert [e["type"] for e in await events_after(db, brand.id, mark)] == ["brand_updated"]
    assert await versions(db, brand.id) == versions_before

    # +2 days: below the threshold, so no news, but the pages show the new date.
    mark = await last_event_id(db)
    await api.move("LAMP", "PO-2", expected_date="2026-11-27")
    assert [e["type"] for e in await events_after(db, brand.id, mark)] == ["supply_changed"]
    assert eta_of(await api.order("1003"), "1")["ship_by"] == "2026-11-28"
    bumped = await versions(db, brand.id)
    assert bumped == {
        **versions_before,
        "1002": versions_before["1002"] + 1,
        "1003": versions_before["1003"] + 1,
    }

    # +1 more: 3 days from what the shopper was told (11-26), so now it is news, told from 11-26.
    mark = await last_event_id(db)
    await api.move("LAMP", "PO-2", expected_date="2026-11-28")
    news = await events_after(db, brand.id, mark)
    on_28 = ("2026-11-29", "2026-12-01", "2026-12-04")
    assert by_order(news, "eta_changed") == {
        "1002": {"lines": [change("2", "later", 3, ON_25, on_28)]},
        "1003": {
            "lines": [change("1", "later", 3, ON_25, on_28), change("2", "later", 3, ON_25, on_28)]
        },
    }
    assert len(news) == 3

    # -2 days from the newly told 11-29: quiet again.
    mark = await last_event_id(db)
    await api.move("LAMP", "PO-2", expected_date="2026-11-26")
    assert [e["type"] for e in await events_after(db, brand.id, mark)] == ["supply_changed"]


async def test_an_identical_patch_records_nothing_and_bumps_nothing(queued, db, brand):
    api = queued
    before = await snapshot(db)
    same = await api.move(
        "LAMP",
        "PO-2",
        expected_date="2026-11-25",
        quantity=10,
        confidence=1.0,
        kind="purchase_order",
    )
    assert same == {
        "sku": "LAMP",
        "ref": "PO-2",
        "kind": "purchase_order",
        "quantity": 10,
        "received_quantity": 0,
        "expected_date": "2026-11-25",
        "confidence": 1.0,
    }
    assert await snapshot(db) == before


async def test_deleting_a_po_loses_the_dates_and_adding_it_back_gains_them(queued, db, brand):
    api = queued
    mark = await last_event_id(db)
    response = await api.call("DELETE", "/skus/LAMP/supply/PO-2", status=204)
    assert response.content == b""

    news = await events_after(db, brand.id, mark)
    assert news[0] == {
        "type": "supply_removed",
        "order": None,
        "data": {"sku": "LAMP", "ref": "PO-2"},
    }
    assert by_order(news, "eta_changed") == {
        "1002": {"lines": [change("2", "lost_date", None, ON_25, None)]},
        "1003": {
            "lines": [
                change("1", "lost_date", None, ON_25, None),
                change("2", "lost_date", None, ON_25, None),
            ]
        },
    }
    assert len(news) == 3
    order = await api.order("1003")
    assert [(line["eta"]["reason"], line["eta"]["window_state"]) for line in order["lines"]] == [
        ("no_supply", "no_date"),
        ("no_supply", "no_date"),
    ]
    assert [(p["key"], p["lines"]) for p in order["expected_parcels"]] == [("undated", ["1", "2"])]

    mark = await last_event_id(db)
    await api.supply("LAMP", "PO-2", 10, "2026-11-25")
    news = await events_after(db, brand.id, mark)
    assert by_order(news, "eta_changed") == {
        "1002": {"lines": [change("2", "gained_date", None, None, ON_25)]},
        "1003": {
            "lines": [
                change("1", "gained_date", None, None, ON_25),
                change("2", "gained_date", None, None, ON_25),
            ]
        },
    }
    assert len(news) == 3
