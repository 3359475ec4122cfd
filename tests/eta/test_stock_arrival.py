"""Stock arriving serves waiting lines oldest first, strictly first come first served.

LAMP: no stock, PO-1 (5 units, 11-20) and PO-2 (10 units, 11-30). Waiting: 1001 (2 units,
08:00), 1002 (2 units, 09:00), 1003 (1 unit, 10:00), all on PO-1.
"""

from __future__ import annotations

import pytest

from tests.api.helpers import assert_problem, snapshot
from tests.eta.helpers import (
    backordered,
    by_order,
    eta_of,
    events_after,
    last_event_id,
    line_of,
    on_hand,
    order_body,
    sqlite_only,
    versions,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def queued(api):
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 5, "2026-11-20")
    await api.supply("LAMP", "PO-2", 10, "2026-11-30")
    await api.place("1001", [backordered("1", "LAMP", 2)], placed_at="2026-11-01T08:00:00Z")
    await api.place("1002", [backordered("1", "LAMP", 2)], placed_at="2026-11-01T09:00:00Z")
    await api.place("1003", [backordered("1", "LAMP", 1)], placed_at="2026-11-01T10:00:00Z")
    return api


async def places(api, numbers):
    """Return (status, queue position, supply ref, ship-by) of each order's line 1."""
    out = {}
    for number in numbers:
        line = line_of(await api.order(number), "1")
        eta = line["eta"]
        out[number] = (
            line["status"],
            eta and eta["queue_position"],
            eta and eta["supply_ref"],
            eta and eta["ship_by"],
        )
    return out


def allocated(*lines):
    return {"lines": [{"line": ref, "sku": "LAMP", "quantity": qty} for ref, qty in lines]}


async def test_receiving_serves_the_oldest_line_and_the_rest_move_up(queued, db, brand):
    api = queued
    assert await places(api, ["1001", "1002", "1003"]) == {
        "1001": ("backordered", 1, "PO-1", "2026-11-21"),
        "1002": ("backordered", 2, "PO-1", "2026-11-21"),
        "1003": ("backordered", 3, "PO-1", "2026-11-21"),
    }
    versions_before = await versions(db, brand.id)
    mark = await last_event_id(db)

    received = await api.receive("LAMP", "PO-1", 3)

    assert received == {
        "sku": "LAMP",
        "ref": "PO-1",
        "kind": "purchase_order",
        "quantity": 5,
        "received_quantity": 3,
        "expected_date": "2026-11-20",
        "confidence": 1.0,
    }
    # 1001 takes 2 of the 3 units. 1002 needs 2 and only 1 is left, so it keeps waiting (for
    # the rest of PO-1), and 1003 may not jump it for the 1 unit on hand.
    assert await places(api, ["1001", "1002", "1003"]) == {
        "1001": ("in_stock", None, None, None),
        "1002": ("backordered", 1, "PO-1", "2026-11-21"),
        "1003": ("backordered", 2, "PO-1", "2026-11-21"),
    }
    assert await on_hand(db, brand.id, "LAMP") == 1
    news = await events_after(db, brand.id, mark)
    assert news == [
        {
            "type": "stock_received",
            "order": None,
            "data": {"sku": "LAMP", "ref": "PO-1", "quantity": 3},
        },
        {"type": "backorder_allocated", "order": "1001", "data": allocated(("1", 2))},
    ]
    assert await versions(db, brand.id) == {n: v + 1 for n, v in versions_before.items()}
    served = await api.order("1001")
    assert served["expected_parcels"] == []

    # A later order queues behind them all, though a unit sits on the shelf.
    late = await api.place("1004", [backordered("1", "LAMP", 1)], placed_at="2026-11-02T09:00:00Z")
    assert line_of(late, "1")["status"] == "backordered"
    assert (eta_of(late, "1")["queue_position"], eta_of(late, "1")["supply_ref"]) == (3, "PO-2")
    assert eta_of(late, "1")["ship_by"] == "2026-12-01"
    assert await on_hand(db, brand.id, "LAMP") == 1

    # The rest of PO-1 completes 1002 and 1003, not 1004.
    mark = await last_event_id(db)
    await api.receive("LAMP", "PO-1", 2)
    assert await places(api, ["1002", "1003", "1004"]) == {
        "1002": ("in_stock", None, None, None),
        "1003": ("in_stock", None, None, None),
        "1004": ("backordered", 1, "PO-2", "2026-12-01"),
    }
    assert await on_hand(db, brand.id, "LAMP") == 0
    assert by_order(await events_after(db, brand.id, mark), "backorder_allocated") == {
        "1002": allocated(("1", 2)),
        "1003": allocated(("1", 1)),
    }


@sqlite_only
async def test_one_order_with_several_served_lines_gets_one_event(api, db, brand):
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 5, "2026-11-20")
    await api.place("1001", [backordered("a", "LAMP", 1), backordered("b", "LAMP", 2)])
    mark = await last_event_id(db)
    await api.receive("LAMP", "PO-1", 3)
    assert by_order(await events_after(db, brand.id, mark), "backorder_allocated") == {
        "1001": allocated(("a", 1), ("b", 2))
    }


async def test_raising_on_hand_with_put_serves_the_queue_too(queued, db, brand):
    api = queued
    mark = await last_event_id(db)

    sku = await api.sku("LAMP", on_hand=4)

    # The answer shows what is left once the waiting lines took theirs.
    assert sku["on_hand"] == 0
    assert await on_hand(db, brand.id, "LAMP") == 0
    assert await places(api, ["1001", "1002", "1003"]) == {
        "1001": ("in_stock", None, None, None),
        "1002": ("in_stock", None, None, None),
        "1003": ("backordered", 1, "PO-1", "2026-11-21"),
    }
    news = await events_after(db, brand.id, mark)
    assert news[0] == {
        "type": "stock_set",
        "order": None,
        "data": {"sku": "LAMP", "on_hand": 4},
    }
    assert by_order(news, "backorder_allocated") == {
        "1001": allocated(("1", 2)),
        "1002": allocated(("1", 2)),
    }
    assert len(news) == 3


@sqlite_only
async def test_patch_sku_on_hand_serves_the_queue(queued, db, brand):
    api = queued
    response = await api.call("PATCH", "/skus/LAMP", {"on_hand": 2})
    assert response.json()["on_hand"] == 0
    assert (await places(api, ["1001"]))["1001"][0] == "in_stock"


@sqlite_only
async def test_receiving_more_than_the_row_still_expects_is_refused(queued, db, brand):
    api = queued
    await api.receive("LAMP", "PO-1", 3)
    before = await snapshot(db)

    response = await api.call(
        "POST", "/skus/LAMP/supply/PO-1/receive", {"quantity": 3}, status=None
    )

    body = assert_problem(response, 409, "quantity-exceeded", ["quantity"])
    assert body["errors"] == [{"path": "quantity", "message": "at most 2"}]
    assert await snapshot(db) == before

    await api.receive("LAMP", "PO-1", 2)
    before = await snapshot(db)
    response = await api.call(
        "POST", "/skus/LAMP/supply/PO-1/receive", {"quantity": 1}, status=None
    )
    assert_problem(response, 409, "quantity-exceeded", ["quantity"])
    assert await snapshot(db) == before


async def test_resending_an_order_after_its_line_was_served_keeps_the_allocation(queued, db, brand):
    """The brand's system still says "backordered": re-sending it must not undo the allocation."""
    api = queued
    await api.receive("LAMP", "PO-1", 2)
    assert (await places(api, ["1001"]))["1001"][0] == "in_stock"
    version = (await versions(db, brand.id))["1001"]
    mark = await last_event_id(db)

    body = order_body("1001", [backordered("1", "LAMP", 2)], placed_at="2026-11-01T08:00:00Z")
    response = await api.call("POST", "/orders", body)

    assert line_of(response.json(), "1")["status"] == "in_stock"
    assert response.json()["version"] == version
    assert await on_hand(db, brand.id, "LAMP") == 0
    assert await events_after(db, brand.id, mark) == []
    assert (await places(api, ["1002"]))["1002"][1] == 1
