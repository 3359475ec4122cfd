"""Change detection: each API change re-dates what it must; a full recompute finds nothing to do."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import anyio
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.cli import main
from app.storage import etas
from tests.conftest import make_brand
from tests.eta.conftest import START
from tests.eta.helpers import (
    Api,
    backordered,
    by_order,
    engine_state,
    eta_of,
    events_after,
    in_stock,
    last_event_id,
    order_body,
    sqlite_only,
)

pytestmark = pytest.mark.anyio


async def assert_nothing_to_do(db, brand_id: int, now: dt.datetime) -> None:
    """A full recompute right now must change nothing and tell nothing."""
    before = await engine_state(db, brand_id)
    summary = await etas.recompute_brand(db, brand_id, now)
    done = (summary.changed_lines, summary.served_lines, summary.events, summary.orders_bumped)
    assert done == (0, 0, 0, 0), summary
    assert await engine_state(db, brand_id) == before


SHIPMENT = {"carrier": "ups", "tracking_number": "1Z999AA10123456784"}


async def test_a_full_recompute_after_any_api_change_finds_nothing_to_do(api, db, brand):
    steps = [
        lambda: api.sku("A", production_lead_days=10, release_date="2026-11-25"),
        lambda: api.sku("B", season_start="2026-11-28"),
        lambda: api.sku("C"),
        lambda: api.supply("A", "PO-1", 3, "2026-11-20"),
        lambda: api.supply("A", "V-1", 2, "2026-11-15", kind="vendor"),
        lambda: api.supply("B", "PO-B", 4, "2026-11-22", confidence=0.7),
        lambda: api.place(
            "1001",
            [
                backordered("1", "A", 2),
                backordered("2", "A", 1, "preorder"),
                backordered("3", "B", 1, "seasonal"),
                in_stock("4", "C"),
            ],
            placed_at="2026-11-01T08:00:00Z",
        ),
        lambda: api.place(
            "1002",
            [
                backordered("1", "A", 1, "custom"),
                backordered("2", "A", 1, "dropship"),
                backordered("3", "B", 2, "manufacturer"),
                backordered("4", "C", 1, "indefinite"),
            ],
        ),
        lambda: api.place("1003", [backordered("1", "A", 2), backordered("2", "B", 1)]),
        lambda: api.move("A", "PO-1", quantity=6),
        lambda: api.move("B", "PO-B", confidence=0.9),
        lambda: api.receive("A", "PO-1", 2),
        lambda: api.sku("C", on_hand=1),
        lambda: api.call(
            "POST",
            "/orders/1003/shipments",
            {**SHIPMENT, "ref": "P1", "lines": [{"line": "2", "quantity": 1}]},
            status=201,
        ),
        # Cancel two lines of 1002 by sending it without them.
        lambda: api.place(
            "1002", [backordered("1", "A", 1, "custom"), backordered("3", "B", 2, "manufacturer")]
        ),
        lambda: api.call("DELETE", "/skus/B/supply/PO-B", status=204),
        lambda: api.patch_brand(handling_days=2),
        lambda: api.supply("B", "PO-B2", 5, "2026-11-26"),
    ]
    for step in steps:
        await step()
        await assert_nothing_to_do(db, brand.id, START)


@sqlite_only
async def test_an_earlier_placed_at_moves_the_order_up_the_queue_at_once(api, db, brand):
    await api.sku("LAMP")
    await api.sku("DESK", production_lead_days=10)
    await api.supply("LAMP", "PO-1", 1, "2026-11-20")
    await api.supply("LAMP", "PO-2", 1, "2026-11-30")
    await api.place("1001", [backordered("1", "LAMP")], placed_at="2026-11-01T10:00:00Z")
    lines = [backordered("1", "LAMP"), backordered("2", "DESK", 1, "custom")]
    second = await api.place("1002", lines, placed_at="2026-11-01T11:00:00Z")
    assert eta_of(second, "1")["supply_ref"] == "PO-2"
    assert eta_of(second, "2")["available_from"] == "2026-11-11"
    mark = await last_event_id(db)

    # The brand corrects the order's time: it was placed first, on 10-30.
    second = await api.place("1002", lines, placed_at="2026-10-30T09:00:00Z")

    assert (eta_of(second, "1")["supply_ref"], eta_of(second, "1")["queue_position"]) == ("PO-1", 1)
    assert eta_of(second, "2")["available_from"] == "2026-11-09"
    first = await api.order("1001")
    assert (eta_of(first, "1")["supply_ref"], eta_of(first, "1")["queue_position"]) == ("PO-2", 2)
    assert set(by_order(await events_after(db, brand.id, mark), "eta_changed")) == {"1001", "1002"}
    await assert_nothing_to_do(db, brand.id, START)


@sqlite_only
async def test_a_new_shipping_region_redates_delivery_at_once(api, db, brand):
    await api.patch_brand(transit_by_region={"US-HI": [6, 12]})
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 5, "2026-11-20")
    lines = [backordered("1", "LAMP")]
    order = await api.place("1001", lines, shipping={"region": "US-CA"})
    assert eta_of(order, "1")["delivery"] == {"earliest": "2026-11-23", "latest": "2026-11-26"}

    order = await api.place("1001", lines, shipping={"region": "US-HI"})

    assert eta_of(order, "1")["delivery"] == {"earliest": "2026-11-27", "latest": "2026-12-03"}
    await assert_nothing_to_do(db, brand.id, START)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_cli_recompute_after_api_changes_finds_nothing_to_do(
    api, db, brand, clock, database_url, monkeypatch, capsys
):
    # The command runs on the real clock, so the data is dated from it.
    now = dt.datetime.now(dt.UTC)
    clock.set(now)
    today = now.date()
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 2, (today + dt.timedelta(days=10)).isoformat())
    await api.supply("LAMP", "PO-2", 5, (today + dt.timedelta(days=40)).isoformat())
    placed = (now - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    await api.place("1001", [backordered("1", "LAMP", 2)], placed_at=placed)
    await api.place("1002", [backordered("1", "LAMP", 1)], placed_at=placed)  # at risk
    await api.place("1003", [backordered("1", "BIKE", 1, "indefinite")], placed_at=placed)
    await api.receive("LAMP", "PO-1", 1)
    before = await engine_state(db, brand.id)
    monkeypatch.setenv("DATABASE_URL", database_url)
    capsys.readouterr()

    status = await anyio.to_thread.run_sync(main, ["eta", "recompute"])

    assert status == 0
    assert capsys.readouterr().out == (
        "acme: 3 waiting lines, 0 changed, 0 served from stock, 0 events\n"
    )
    assert await engine_state(db, brand.id) == before


# The property: random API operations, then a full recompute changes nothing. ------------------

SKUS = ["A", "B", "C"]
TYPES = ["standard", "preorder", "custom", "dropship", "manufacturer", "seasonal", "indefinite"]

order_op = st.tuples(
    st.just("order"),
    st.lists(
        st.tuples(st.sampled_from(SKUS), st.integers(1, 3), st.sampled_from(TYPES)),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 3000),  # minutes after 10-31 00:00
)
supply_op = st.tuples(
    st.just("supply"),
    st.sampled_from(SKUS),
    st.sampled_from(["purchase_order", "production", "vendor"]),
    st.integers(1, 5),
    st.integers(-3, 40),  # days from today; overdue rows count from today
    st.sampled_from([1.0, 0.8, 0.5]),
)
patch_op = st.tuples(
    st.just("patch"),
    st.integers(0, 20),
    st.sampled_from(["quantity", "confidence", "kind", "expected_date"]),
    st.integers(0, 40),
)
delete_op = st.tuples(st.just("delete"), st.integers(0, 20))
receive_op = st.tuples(st.just("receive"), st.integers(0, 20), st.integers(1, 4))
stock_op = st.tuples(st.just("stock"), st.sampled_from(SKUS), st.integers(0, 4))
ship_op = st.tuples(st.just("ship"), st.integers(0, 20), st.integers(0, 2), st.integers(1, 3))
cancel_op = st.tuples(st.just("cancel"), st.integers(0, 20), st.integers(0, 2))
edit_op = st.tuples(
    st.just("edit"),
    st.integers(0, 20),
    st.integers(0, 2),
    st.sampled_from(SKUS),
    st.integers(1, 3),
    st.sampled_from([*TYPES, "in_stock"]),
)
operations = st.lists(
    st.one_of(
        order_op,
        order_op,
        supply_op,
        supply_op,
        patch_op,
        delete_op,
        receive_op,
        stock_op,
        ship_op,
        cancel_op,
        edit_op,
    ),
    min_size=3,
    max_size=10,
)
slugs = itertools.count()
BASE = dt.datetime(2026, 10, 31, tzinfo=dt.UTC)


async def apply(api: Api, ops) -> None:
    """Run the operations; refusals (409, 422) are fine, the property is about what was kept."""
    supplies: list[tuple[str, str]] = []
    orders: list[tuple[str, list[dict], str]] = []
    serial = itertools.count(1)
    for sku in SKUS:
        await api.sku(
            sku, production_lead_days=5, release_date="2026-11-12", season_start="2026-11-20"
        )
    for op in ops:
        kind = op[0]
        if kind == "order":
            number = f"{next(serial)}"
            lines = [
                backordered(str(i), sku, quantity, type_)
                for i, (sku, quantity, type_) in enumerate(op[1])
            ]
            placed = (BASE + dt.timedelta(minutes=op[2])).isoformat().replace("+00:00", "Z")
            await api.place(number, lines, placed_at=placed)
            orders.append((number, lines, placed))
        elif kind == "supply":
            _, sku, supply_kind, quantity, days, confidence = op
            ref = f"S{next(serial)}"
            expected = (START.date() + dt.timedelta(days=days)).isoformat()
            await api.supply(sku, ref, quantity, expected, kind=supply_kind, confidence=confidence)
            supplies.append((sku, ref))
        elif kind in ("patch", "delete", "receive") and supplies:
            sku, ref = supplies[op[1] % len(supplies)]
            path = f"/skus/{sku}/supply/{ref}"
            if kind == "patch":
                field, value = op[2], op[3]
                body = {
                    "quantity": {"quantity": value % 6 + 1},
                    "confidence": {"confidence": value / 40},
                    "kind": {"kind": ["purchase_order", "vendor"][value % 2]},
                    "expected_date": {
                        "expected_date": (START.date() + dt.timedelta(days=value)).isoformat()
                    },
                }[field]
                response = await api.call("PATCH", path, body, status=None)
                assert response.status_code in (200, 409, 422), response.text
            elif kind == "delete":
                await api.call("DELETE", path, status=204)
                supplies.remove((sku, ref))
            else:
                response = await api.call("POST", f"{path}/receive", {"quantity": op[2]}, None)
                assert response.status_code in (200, 409), response.text
        elif kind == "stock":
            await api.sku(op[1], on_hand=op[2], production_lead_days=5)
        elif kind == "ship" and orders:
            number, lines, _ = orders[op[1] % len(orders)]
            line = lines[op[2] % len(lines)]
            parcel = {
                **SHIPMENT,
                "ref": f"P{next(serial)}",
                "lines": [{"line": line["ref"], "quantity": op[3]}],
            }
            response = await api.call("POST", f"/orders/{number}/shipments", parcel, None)
            assert response.status_code in (201, 409), response.text
        elif kind in ("cancel", "edit") and orders:
            index = op[1] % len(orders)
            number, lines, placed = orders[index]
            target = op[2] % len(lines)
            if kind == "cancel":
                if len(lines) == 1:
                    continue
                kept = [line for i, line in enumerate(lines) if i != target]
            else:
                # Re-send the order with one line changed: its SKU, quantity, type or status.
                _, _, _, sku, quantity, type_ = op
                changed = backordered(lines[target]["ref"], sku, quantity, type_)
                if type_ == "in_stock":
                    changed = in_stock(lines[target]["ref"], sku, quantity)
                kept = [changed if i == target else line for i, line in enumerate(lines)]
            response = await api.call(
                "POST", "/orders", order_body(number, kept, placed), status=None
            )
            assert response.status_code in (200, 409), response.text
            if response.status_code == 200:
                orders[index] = (number, kept, placed)


@settings(
    max_examples=20,
    deadline=None,
    database=None,
    # Each example is a dozen HTTP calls: shrinking a failure would take minutes, so a failing
    # sequence is reported as found (at most 10 operations).
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_incremental_recomputes_agree_with_a_full_one(client, db, ops):
    brand = await make_brand(db, f"p{next(slugs)}-{uuid.uuid4().hex[:6]}")
    api = Api(client, brand)
    await apply(api, ops)
    await assert_nothing_to_do(db, brand.id, START)
