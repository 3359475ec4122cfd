"""Each backorder type dated through the API, and orders mixing shipped, in-stock and waiting lines.

The clock stands at 2026-11-02 12:00 UTC; orders are placed 2026-11-01 (window end 2026-12-01).
Brand defaults: handling 1 day, transit 2-5 days, confidence widening K=10.
"""

from __future__ import annotations

import pytest

from tests.eta.helpers import (
    backordered,
    by_order,
    dated,
    delivery,
    eta_of,
    events_after,
    in_stock,
    last_event_id,
    line_ids,
    line_of,
    on_hand,
    sqlite_only,
    undated,
    versions,
)

pytestmark = pytest.mark.anyio


async def test_standard_line_waits_for_the_next_restock(api, db, brand):
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 10, "2026-11-20")
    mark = await last_event_id(db)

    order = await api.place("1001", [backordered("1", "LAMP", 2)])

    ids = await line_ids(db, brand.id, "1001")
    key = f"backorder:{ids['1']}"
    assert line_of(order, "1")["status"] == "backordered"
    assert eta_of(order, "1") == dated(
        "2026-11-21",
        "2026-11-23",
        "2026-11-26",
        available_from="2026-11-20",
        reason="restock",
        supply_ref="PO-1",
        group=key,
    )
    assert order["window_end"] == "2026-12-01"
    assert order["expected_parcels"] == [
        {
            "key": key,
            "kind": "backorder",
            "lines": ["1"],
            "ship_by": "2026-11-21",
            "delivery": delivery("2026-11-23", "2026-11-26"),
        }
    ]
    # Dating a new line is part of creating it: version 1, no ETA news.
    assert order["version"] == 1
    assert [e["type"] for e in await events_after(db, brand.id, mark)] == ["order_created"]
    assert await api.order("1001") == order


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        # Release after the PO: the line ships on release.
        (
            "2026-11-25",
            dict(
                available_from="2026-11-25",
                reason="release_date",
                ship=("2026-11-26", "2026-11-28", "2026-12-01"),
            ),
        ),
        # Release before the PO: the product is out but the units are not; the PO decides.
        (
            "2026-11-10",
            dict(
                available_from="2026-11-20",
                reason="restock",
                ship=("2026-11-21", "2026-11-23", "2026-11-26"),
            ),
        ),
    ],
    ids=["release-after-po", "release-before-po"],
)
@sqlite_only
async def test_preorder_takes_the_later_of_release_and_supply(api, db, brand, release, expected):
    await api.sku("GAME", release_date=release)
    await api.supply("GAME", "PO-1", 10, "2026-11-20")

    order = await api.place("1001", [backordered("1", "GAME", 1, "preorder")])

    ids = await line_ids(db, brand.id, "1001")
    assert eta_of(order, "1") == dated(
        *expected["ship"],
        available_from=expected["available_from"],
        reason=expected["reason"],
        supply_ref="PO-1",
        queue="preorder",
        group=f"backorder:{ids['1']}",
    )


@sqlite_only
async def test_a_new_release_date_redates_the_preorders(api, db, brand):
    await api.sku("GAME", release_date="2026-11-25")
    await api.supply("GAME", "PO-1", 10, "2026-11-20")
    await api.place("1001", [backordered("1", "GAME", 1, "preorder")])
    mark = await last_event_id(db)

    response = await api.call("PATCH", "/skus/GAME", {"release_date": "2026-11-28"})

    assert response.json()["release_date"] == "2026-11-28"
    assert eta_of(await api.order("1001"), "1")["ship_by"] == "2026-11-29"
    news = await events_after(db, brand.id, mark)
    assert [e["type"] for e in news] == ["stock_set", "eta_changed"]
    assert news[1]["data"]["lines"][0]["shift_days"] == 3


@sqlite_only
async def test_preorder_without_supply_has_no_date_despite_a_release_date(api):
    await api.sku("GAME", release_date="2026-11-25")
    order = await api.place("1001", [backordered("1", "GAME", 1, "preorder")])
    assert eta_of(order, "1") == undated("no_supply", queue="preorder")
    assert order["expected_parcels"] == [
        {"key": "undated", "kind": "undated", "lines": ["1"], "ship_by": None, "delivery": None}
    ]


@sqlite_only
async def test_preorders_queue_ahead_of_earlier_stock_lines(api):
    await api.sku("GAME")
    await api.supply("GAME", "PO-1", 1, "2026-11-20")
    await api.supply("GAME", "PO-2", 1, "2026-11-27")
    await api.place("1001", [backordered("1", "GAME", 1)], placed_at="2026-11-01T08:00:00Z")
    await api.place("1002", [backordered("1", "GAME", 1, "preorder")])

    standard = eta_of(await api.order("1001"), "1")
    preorder = eta_of(await api.order("1002"), "1")
    assert (preorder["queue"], preorder["queue_position"], preorder["supply_ref"]) == (
        "preorder",
        1,
        "PO-1",
    )
    assert (standard["queue"], standard["queue_position"], standard["supply_ref"]) == (
        "stock",
        1,
        "PO-2",
    )
    assert standard["ship_by"] == "2026-11-28"


async def test_custom_line_is_made_from_the_order_date_and_takes_no_stock(api, db, brand):
    await api.sku("DESK", on_hand=5, production_lead_days=14)
    order = await api.place("1001", [backordered("1", "DESK", 2, "custom")])

    ids = await line_ids(db, brand.id, "1001")
    assert line_of(order, "1")["status"] == "backordered"
    assert eta_of(order, "1") == dated(
        "2026-11-16",
        "2026-11-18",
        "2026-11-21",
        available_from="2026-11-15",
        reason="production",
        supply_ref=None,
        queue="custom",
        group=f"backorder:{ids['1']}",
    )
    assert await on_hand(db, brand.id, "DESK") == 5


@sqlite_only
async def test_custom_line_without_lead_time_has_no_date(api):
    await api.sku("DESK")
    order = await api.place("1001", [backordered("1", "DESK", 1, "custom")])
    assert eta_of(order, "1") == undated("no_lead_time", queue="custom")


async def test_dropship_line_takes_the_vendor_promise_and_only_it(api, db, brand):
    await api.sku("SOFA")
    await api.supply("SOFA", "V-1", 5, "2026-11-12", kind="vendor")

    order = await api.place("1001", [backordered("1", "SOFA", 2, "dropship")])
    # A warehouse line of the same SKU cannot take the vendor's units.
    other = await api.place("1002", [backordered("1", "SOFA", 1)])

    assert eta_of(order, "1") == dated(
        "2026-11-13",
        "2026-11-15",
        "2026-11-18",
        available_from="2026-11-12",
        reason="vendor_date",
        supply_ref="V-1",
        queue="dropship",
        group="dropship:V-1",
    )
    assert order["expected_parcels"] == [
        {
            "key": "dropship:V-1",
            "kind": "dropship",
            "lines": ["1"],
            "ship_by": "2026-11-13",
            "delivery": delivery("2026-11-15", "2026-11-18"),
        }
    ]
    assert eta_of(other, "1") == undated("no_supply")


async def test_manufacturer_line_widens_the_late_end_by_the_supply_confidence(api, db, brand):
    await api.sku("OVEN")
    # round((1 - 0.55) * 10) = round(4.5) = 5, half up.
    await api.supply("OVEN", "PO-1", 10, "2026-11-20", confidence=0.55)

    order = await api.place(
        "1001", [backordered("1", "OVEN", 1, "manufacturer"), backordered("2", "OVEN", 1)]
    )

    ids = await line_ids(db, brand.id, "1001")
    key = f"backorder:{min(ids.values())}"
    assert eta_of(order, "1") == dated(
        "2026-11-21",
        "2026-11-23",
        "2026-12-01",
        available_from="2026-11-20",
        reason="manufacturer_date",
        supply_ref="PO-1",
        group=key,
    )
    # The widening belongs to the supply, so a standard line on it gets it too.
    assert eta_of(order, "2") == dated(
        "2026-11-21",
        "2026-11-23",
        "2026-12-01",
        available_from="2026-11-20",
        reason="restock",
        supply_ref="PO-1",
        position=2,
        group=key,
    )


@sqlite_only
async def test_widening_can_put_a_line_at_risk_though_its_ship_by_is_in_the_window(api, db, brand):
    await api.sku("OVEN")
    await api.supply("OVEN", "PO-1", 10, "2026-11-27", confidence=0.5)  # 5 days wider
    order = await api.place("1001", [backordered("1", "OVEN", 1, "manufacturer")])
    eta = eta_of(order, "1")
    # ship-by 11-28 + 5 days of doubt = 12-03, past the window's last day 12-01.
    assert (eta["ship_by"], eta["delivery"], eta["window_state"]) == (
        "2026-11-28",
        delivery("2026-11-30", "2026-12-08"),
        "at_risk",
    )


@pytest.mark.parametrize(
    ("season", "available", "reason"),
    [("2026-11-28", "2026-11-28", "season_start"), ("2026-11-10", "2026-11-20", "restock")],
    ids=["season-after-po", "season-before-po"],
)
@sqlite_only
async def test_seasonal_line_ships_when_the_season_starts(
    api, db, brand, season, available, reason
):
    await api.sku("SLED", season_start=season)
    await api.supply("SLED", "PO-1", 10, "2026-11-20")
    order = await api.place("1001", [backordered("1", "SLED", 1, "seasonal")])
    eta = eta_of(order, "1")
    assert (eta["available_from"], eta["reason"], eta["supply_ref"], eta["queue"]) == (
        available,
        reason,
        "PO-1",
        "stock",
    )
    ship_by = {"2026-11-28": "2026-11-29", "2026-11-20": "2026-11-21"}[available]
    assert eta["ship_by"] == ship_by


async def test_indefinite_line_keeps_its_place_then_gains_a_date_from_real_supply(api, db, brand):
    await api.sku("BIKE")
    await api.place("1001", [backordered("1", "BIKE", 1)], placed_at="2026-11-01T08:00:00Z")
    await api.place("1002", [backordered("1", "BIKE", 2)], placed_at="2026-11-01T09:00:00Z")
    order = await api.place("1003", [backordered("1", "BIKE", 1, "indefinite")])

    assert eta_of(order, "1") == undated("no_confirmed_supply", position=3)
    assert eta_of(await api.order("1001"), "1") == undated("no_supply", position=1)
    before = await versions(db, brand.id)
    mark = await last_event_id(db)

    await api.supply("BIKE", "PO-1", 4, "2026-11-20")

    order = await api.order("1003")
    ids = await line_ids(db, brand.id, "1003")
    assert eta_of(order, "1") == dated(
        "2026-11-21",
        "2026-11-23",
        "2026-11-26",
        available_from="2026-11-20",
        reason="restock",
        supply_ref="PO-1",
        position=3,
        group=f"backorder:{ids['1']}",
    )
    news = await events_after(db, brand.id, mark)
    assert [e["type"] for e in news].count("eta_changed") == 3
    changed = by_order(news, "eta_changed")
    assert changed["1003"] == {
        "lines": [
            {
                "line": "1",
                "sku": "BIKE",
                "direction": "gained_date",
                "shift_days": None,
                "old": {"ship_by": None, "delivery": None},
                "new": {"ship_by": "2026-11-21", "delivery": ["2026-11-23", "2026-11-26"]},
            }
        ]
    }
    assert await versions(db, brand.id) == {n: v + 1 for n, v in before.items()}


async def test_partial_order_mixes_shipped_in_stock_and_backordered_lines(api, db, brand):
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 10, "2026-11-20")
    shipment = {
        "ref": "P1",
        "carrier": "ups",
        "tracking_number": "1Z999AA10123456784",
        "status": "in_transit",
        "lines": [{"line": "2", "quantity": 1}],
    }
    order = await api.place(
        "1001",
        [in_stock("1", "MUG", 2), in_stock("2", "CUP", 1), backordered("3", "LAMP", 1)],
        shipments=[shipment],
    )

    ids = await line_ids(db, brand.id, "1001")
    statuses = [(line["ref"], line["status"], line["shipped_quantity"]) for line in order["lines"]]
    assert statuses == [("1", "in_stock", 0), ("2", "shipped", 1), ("3", "backordered", 0)]
    assert eta_of(order, "1") is None
    assert eta_of(order, "2") is None
    assert eta_of(order, "3") == dated(
        "2026-11-21",
        "2026-11-23",
        "2026-11-26",
        available_from="2026-11-20",
        reason="restock",
        supply_ref="PO-1",
        group=f"backorder:{ids['3']}",
    )
    assert [(p["kind"], p["lines"], p["ship_by"]) for p in order["expected_parcels"]] == [
        ("backorder", ["3"], "2026-11-21")
    ]


async def test_partly_shipped_line_waits_only_for_the_units_left(api, db, brand):
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 2, "2026-11-20")
    await api.supply("LAMP", "PO-2", 5, "2026-11-25")
    shipment = {
        "ref": "P1",
        "carrier": "ups",
        "tracking_number": "1Z999AA10123456784",
        "lines": [{"line": "1", "quantity": 1}],
    }
    first = await api.place("1001", [backordered("1", "LAMP", 3)], shipments=[shipment])
    second = await api.place(
        "1002", [backordered("1", "LAMP", 1)], placed_at="2026-11-01T11:00:00Z"
    )

    line = line_of(first, "1")
    assert (line["status"], line["shipped_quantity"]) == ("backordered", 1)
    # Two units wait, and PO-1 (2 units) covers them; the next order's unit comes from PO-2.
    assert (line["eta"]["supply_ref"], line["eta"]["ship_by"]) == ("PO-1", "2026-11-21")
    assert (eta_of(second, "1")["supply_ref"], eta_of(second, "1")["queue_position"]) == ("PO-2", 2)
    mark = await last_event_id(db)

    await api.receive("LAMP", "PO-1", 2)

    assert line_of(await api.order("1001"), "1")["status"] == "in_stock"
    assert await on_hand(db, brand.id, "LAMP") == 0
    allocated = by_order(await events_after(db, brand.id, mark), "backorder_allocated")
    assert allocated == {"1001": {"lines": [{"line": "1", "sku": "LAMP", "quantity": 2}]}}
    second = await api.order("1002")
    assert (eta_of(second, "1")["supply_ref"], eta_of(second, "1")["queue_position"]) == ("PO-2", 1)
