"""Backordered lines of one order that ship within the consolidation window travel together."""

from __future__ import annotations

import pytest

from tests.eta.helpers import backordered, delivery, eta_of, line_ids, sqlite_only

pytestmark = pytest.mark.anyio


async def stock(api, sku, expected, **extra):
    await api.sku(sku)
    await api.supply(sku, f"PO-{sku}", 10, expected, **extra)


def groups(order):
    return {line["ref"]: line["eta"] and line["eta"]["group"] for line in order["lines"]}


@sqlite_only
async def test_lines_within_the_window_share_one_parcel_dated_by_the_latest(api, db, brand):
    await stock(api, "A", "2026-11-20")  # ship-by 11-21
    await stock(api, "B", "2026-11-22")  # ship-by 11-23, 2 days later
    order = await api.place("1001", [backordered("a", "A"), backordered("b", "B")])

    ids = await line_ids(db, brand.id, "1001")
    key = f"backorder:{ids['a']}"
    assert order["expected_parcels"] == [
        {
            "key": key,
            "kind": "backorder",
            "lines": ["a", "b"],
            "ship_by": "2026-11-23",
            "delivery": delivery("2026-11-25", "2026-11-28"),
        }
    ]
    assert groups(order) == {"a": key, "b": key}
    # Each line keeps its own dates; the parcel is dated by the latest.
    assert eta_of(order, "a")["ship_by"] == "2026-11-21"
    assert eta_of(order, "b")["ship_by"] == "2026-11-23"

    # With no consolidation window the two leave separately.
    await api.patch_brand(consolidation_window_days=0)
    order = await api.order("1001")
    assert [(p["key"], p["lines"], p["ship_by"]) for p in order["expected_parcels"]] == [
        (f"backorder:{ids['a']}", ["a"], "2026-11-21"),
        (f"backorder:{ids['b']}", ["b"], "2026-11-23"),
    ]
    assert groups(order) == {"a": f"backorder:{ids['a']}", "b": f"backorder:{ids['b']}"}


async def test_lines_further_apart_ship_in_separate_parcels(api, db, brand):
    await stock(api, "A", "2026-11-20")  # ship-by 11-21: opens the first parcel
    await stock(api, "B", "2026-11-23")  # 11-24: exactly 3 days after, still in it
    await stock(api, "C", "2026-11-24")  # 11-25: 4 days after 11-21, opens a second
    await stock(api, "D", "2026-11-30")  # 12-01: a third
    await api.sku("E")  # no supply: undated
    await api.sku("V")
    await api.supply("V", "V-1", 5, "2026-11-21", kind="vendor")  # ships from the vendor
    lines = [
        backordered("d", "D"),
        backordered("c", "C"),
        backordered("b", "B"),
        backordered("a", "A"),
        backordered("e", "E"),
        backordered("v", "V", 1, "dropship"),
        {"ref": "s", "sku": "S", "title": "Shipped now", "quantity": 1, "unit_price": 100},
    ]
    order = await api.place("1001", lines)

    ids = await line_ids(db, brand.id, "1001")
    # A parcel's key is its lowest line id; lines were sent d, c, b, a, so b's id is below a's.
    first = f"backorder:{min(ids['a'], ids['b'])}"
    second, third = (f"backorder:{ids[ref]}" for ref in ("c", "d"))
    assert first == f"backorder:{ids['b']}"
    # Parcels come by ship-by date, undated last; the vendor's items travel on their own.
    assert order["expected_parcels"] == [
        {
            "key": "dropship:V-1",
            "kind": "dropship",
            "lines": ["v"],
            "ship_by": "2026-11-22",
            "delivery": delivery("2026-11-24", "2026-11-27"),
        },
        {
            "key": first,
            "kind": "backorder",
            "lines": ["b", "a"],
            "ship_by": "2026-11-24",
            "delivery": delivery("2026-11-26", "2026-11-29"),
        },
        {
            "key": second,
            "kind": "backorder",
            "lines": ["c"],
            "ship_by": "2026-11-25",
            "delivery": delivery("2026-11-27", "2026-11-30"),
        },
        {
            "key": third,
            "kind": "backorder",
            "lines": ["d"],
            "ship_by": "2026-12-01",
            "delivery": delivery("2026-12-03", "2026-12-06"),
        },
        {"key": "undated", "kind": "undated", "lines": ["e"], "ship_by": None, "delivery": None},
    ]
    parcels = order["expected_parcels"]
    assert groups(order) == {
        "a": first,
        "b": first,
        "c": second,
        "d": third,
        "e": "undated",
        "v": "dropship:V-1",
        "s": None,
    }
    for parcel in parcels:
        for ref in parcel["lines"]:
            assert eta_of(order, ref)["group"] == parcel["key"]
