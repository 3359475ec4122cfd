"""The storage fast path against the engine's rules applied the plain way.

`etas.recompute` reads the driver's raw rows, compares tuples, diffs only the lines whose told
date moved and writes only what changed, in bulk. Here the same rules run the obvious way, as the
engine first did: SQLAlchemy reads, every line's values as a dict, `diff_etas` over every dated
line. Both must agree on the stored columns, the orders that get a new version and the events.

Each step changes inputs behind the engine's back (supply dates and sizes, stock, the brand's
policy, the clock), so every recompute has real work: lines re-dated, told, served, windows
entered, and choices that already stand.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.domain.eta import (
    BackorderType,
    Inbound,
    LineEta,
    Queue,
    Reason,
    SkuSupply,
    SupplyKind,
    WaitingLine,
    WindowState,
    allocate,
    diff_etas,
    window_end,
    window_state,
)
from app.storage import etas
from app.storage.schema import (
    brands,
    choices,
    events,
    inbound_supply,
    order_lines,
    orders,
    shipment_lines,
    skus,
)
from tests.eta.conftest import START
from tests.eta.helpers import backordered

pytestmark = pytest.mark.anyio

WINDOW_EVENTS = {WindowState.AT_RISK: "window_at_risk", WindowState.EXPIRED: "window_expired"}
COLUMNS = (*etas.ETA_FIELDS, *etas.ANNOUNCED_FIELDS)


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


async def _read(db, brand_id: int) -> dict[str, Any]:
    """Everything the engine reads and writes, through SQLAlchemy's typed reads."""
    shipped = (
        select(func.coalesce(func.sum(shipment_lines.c.quantity), 0))
        .where(shipment_lines.c.order_line_id == order_lines.c.id)
        .scalar_subquery()
    )
    async with db.read() as conn:
        lines = (
            await conn.execute(
                select(
                    order_lines,
                    orders.c.placed_at,
                    orders.c.shipping_region,
                    shipped.label("shipped"),
                )
                .join(orders, orders.c.id == order_lines.c.order_id)
                .where(order_lines.c.brand_id == brand_id)
            )
        ).all()
        supply = (
            await conn.execute(
                select(skus.c.sku, inbound_supply).join(skus, skus.c.id == inbound_supply.c.sku_id)
            )
        ).all()
        stock = (await conn.execute(select(skus).where(skus.c.brand_id == brand_id))).all()
        opened = {
            (r.order_line_id, r.reason)
            for r in await conn.execute(select(choices.c.order_line_id, choices.c.reason))
        }
        versions = {
            r.id: r.version for r in await conn.execute(select(orders.c.id, orders.c.version))
        }
        last_event = (await conn.execute(select(func.coalesce(func.max(events.c.id), 0)))).scalar()
        rules = await etas.load_rules(conn, brand_id)
    return {
        "lines": {r.id: r for r in lines},
        "supply": supply,
        "stock": stock,
        "opened": opened,
        "versions": versions,
        "last_event": last_event,
        "rules": rules,
    }


def _expect(state: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Apply the engine's rules to the state as read, the plain way; return what it must do."""
    rules = state["rules"]
    today = rules.today(now)
    waiting: list[WaitingLine] = []
    for r in state["lines"].values():
        if r.status == "backordered" and r.quantity - r.shipped > 0:
            waiting.append(
                WaitingLine(
                    r.id,
                    r.order_id,
                    r.sku,
                    r.quantity - r.shipped,
                    r.placed_at.astimezone(rules.timezone),
                    BackorderType(r.backorder_type or "standard"),
                    r.shipping_region,
                )
            )
    inbound: dict[str, list[Inbound]] = defaultdict(list)
    for r in state["supply"]:
        if r.quantity > r.received_quantity:
            inbound[r.sku].append(
                Inbound(
                    r.ref,
                    r.quantity - r.received_quantity,
                    r.expected_date,
                    r.confidence,
                    SupplyKind(r.kind),
                )
            )
    supplies = {
        r.sku: SkuSupply(
            r.sku,
            r.on_hand,
            tuple(inbound[r.sku]),
            r.production_lead_days,
            r.release_date,
            r.season_start,
        )
        for r in state["stock"]
    }
    found = allocate(waiting, supplies.values(), rules.policy, today)
    served = {w.line_id for w in waiting if found[w.line_id].reason == Reason.IN_STOCK}
    on_hand = {sku: s.on_hand for sku, s in supplies.items()}
    for w in waiting:
        if w.line_id in served:
            on_hand[w.sku] -= w.quantity
    waiting = [w for w in waiting if w.line_id not in served]
    supplies = {
        sku: SkuSupply(
            sku, on_hand[sku], s.inbound, s.production_lead_days, s.release_date, s.season_start
        )
        for sku, s in supplies.items()
    }
    found = allocate(waiting, supplies.values(), rules.policy, today)

    stored = state["lines"]
    announced = [
        LineEta(
            w.line_id,
            Queue.STOCK,
            0,
            None,
            stored[w.line_id].announced_ship_by,
            stored[w.line_id].announced_delivery_from,
            stored[w.line_id].announced_delivery_to,
            Reason.NO_SUPPLY,
            None,
        )
        for w in waiting
        if stored[w.line_id].eta_computed_at is not None
    ]
    news = diff_etas(announced, found.values(), rules.threshold_days)
    told = {change.line_id for change in news}
    expected_events: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    served_by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line_id in sorted(served):
        r = stored[line_id]
        served_by_order[r.order_id].append(
            {"line": r.ref, "sku": r.sku, "quantity": r.quantity - r.shipped}
        )
    for order_id, lines in served_by_order.items():
        expected_events[order_id].append(("backorder_allocated", {"lines": lines}))
    by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for change in news:
        r = stored[change.line_id]
        by_order[r.order_id].append(
            {
                "line": r.ref,
                "sku": r.sku,
                "direction": change.direction.value,
                "shift_days": change.shift_days,
                "old": {
                    "ship_by": _iso(change.old_ship_by),
                    "delivery": [_iso(d) for d in change.old_delivery]
                    if change.old_delivery
                    else None,
                },
                "new": {
                    "ship_by": _iso(change.new_ship_by),
                    "delivery": [_iso(d) for d in change.new_delivery]
                    if change.new_delivery
                    else None,
                },
            }
        )
    for order_id, lines in by_order.items():
        expected_events[order_id].append(("eta_changed", {"lines": lines}))

    last_day = today + dt.timedelta(days=rules.choice_deadline_days)
    deadline = dt.datetime.combine(last_day, dt.time(23, 59, 59), rules.timezone)
    columns: dict[int, tuple[Any, ...]] = {}
    changed: set[int] = set()
    window_news: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for line_id, eta in found.items():
        r = stored[line_id]
        placed = r.placed_at.astimezone(rules.timezone)
        state_now = window_state(placed, rules.policy.fulfillment_window_days, eta, today, False)
        values = {
            "eta_queue": eta.queue.value,
            "queue_position": eta.queue_position,
            "available_from": eta.available_from,
            "ship_by": eta.ship_by,
            "delivery_from": eta.delivery_from,
            "delivery_to": eta.delivery_to,
            "eta_reason": eta.reason.value,
            "eta_supply_ref": eta.supply_ref,
            "eta_widening_days": eta.widening_days,
            "window_state": state_now.value,
        }
        computed = r.eta_computed_at is not None
        if not computed or line_id in told:
            values.update(
                announced_ship_by=eta.ship_by,
                announced_delivery_from=eta.delivery_from,
                announced_delivery_to=eta.delivery_to,
            )
        else:
            values.update({name: getattr(r, name) for name in etas.ANNOUNCED_FIELDS})
        columns[line_id] = tuple(values[name] for name in COLUMNS)
        if computed and columns[line_id] != tuple(getattr(r, name) for name in COLUMNS):
            changed.add(r.order_id)
        if (
            state_now.value != r.window_state
            and state_now in WINDOW_EVENTS
            and (line_id, state_now.value) not in state["opened"]
        ):
            window_news[(r.order_id, WINDOW_EVENTS[state_now])].append(
                {
                    "line": r.ref,
                    "sku": r.sku,
                    "window_end": window_end(
                        placed, rules.policy.fulfillment_window_days
                    ).isoformat(),
                    "ship_by": _iso(eta.ship_by),
                }
            )
    for (order_id, kind), lines in window_news.items():
        data = {
            "lines": lines,
            "choice_deadline": deadline.astimezone(dt.UTC).isoformat(),
            "default_action": rules.default_action,
        }
        expected_events[order_id].append((kind, data))
    return {
        "columns": columns,
        "served": served,
        "changed": changed,
        "bumped": changed | set(served_by_order),
        "events": dict(expected_events),
    }


async def _check_step(db, brand_id: int, now: dt.datetime) -> dict[str, Any]:
    """Recompute every line of the brand at `now`; assert it did what the plain rules say."""
    before = await _read(db, brand_id)
    expected = _expect(before, now)
    async with db.write() as conn:
        summary = await etas.recompute(conn, brand_id, None, now)
    after = await _read(db, brand_id)

    got = {
        line_id: tuple(getattr(r, name) for name in COLUMNS)
        for line_id, r in after["lines"].items()
        if line_id in expected["columns"]
    }
    assert got == expected["columns"]
    assert {line_id for line_id, r in after["lines"].items() if r.status == "in_stock"} >= expected[
        "served"
    ]
    assert all(after["lines"][line_id].status == "in_stock" for line_id in expected["served"])
    bumped = {
        order_id
        for order_id, version in after["versions"].items()
        if version != before["versions"][order_id]
    }
    assert bumped == expected["bumped"]
    async with db.read() as conn:
        recorded = (
            await conn.execute(
                select(events.c.order_id, events.c.type, events.c.data)
                .where(events.c.id > before["last_event"])
                .order_by(events.c.id)
            )
        ).all()
    per_order: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for r in recorded:
        per_order[r.order_id].append((r.type, r.data))
    assert dict(per_order) == expected["events"]
    assert summary.served_lines == len(expected["served"])
    assert summary.orders_bumped == len(expected["changed"])
    # As before, the count leaves out the served lines' news.
    assert summary.events == sum(1 for r in recorded if r.type != "backorder_allocated")
    return expected


async def _change_behind_the_engine(db, brand_id: int, rng: random.Random) -> None:
    """Change some inputs directly, as a bulk import or a fix in the database would."""
    async with db.write() as conn:
        rows = (
            await conn.execute(select(inbound_supply.c.id, inbound_supply.c.expected_date))
        ).all()
        for row in rng.sample(rows, k=min(len(rows), 3)):
            moved = row.expected_date + dt.timedelta(days=rng.choice([-9, -4, -1, 1, 3, 8, 15]))
            await conn.execute(
                update(inbound_supply)
                .where(inbound_supply.c.id == row.id)
                .values(expected_date=moved, quantity=rng.randint(2, 9), received_quantity=0)
            )
        if rng.random() < 0.4:
            await conn.execute(
                update(skus)
                .where(skus.c.brand_id == brand_id, skus.c.sku == rng.choice("ABCD"))
                .values(on_hand=rng.randint(1, 3))
            )
        if rng.random() < 0.3:
            await conn.execute(
                update(brands)
                .where(brands.c.id == brand_id)
                .values(
                    eta_change_threshold_days=rng.randint(1, 4),
                    handling_days=rng.randint(0, 2),
                    fulfillment_window_days=rng.choice([25, 30, 40]),
                )
            )


@pytest.mark.parametrize("seed", [1, 2])
async def test_the_fast_path_does_what_the_plain_rules_say(api, db, brand, seed):
    rng = random.Random(seed)
    await api.sku("A")
    await api.sku("B", production_lead_days=12)
    await api.sku("C", season_start="2026-11-25")
    await api.sku("D", release_date="2026-11-20")
    supply = [
        ("A", "PO-A1", 6, "2026-11-10", {}),
        ("A", "PO-A2", 5, "2026-11-28", {"confidence": 0.8}),
        ("A", "PO-A3", 8, "2026-12-15", {}),
        ("B", "V-B1", 4, "2026-11-18", {"kind": "vendor", "confidence": 0.7}),
        ("C", "PO-C1", 6, "2026-11-21", {}),
        ("D", "PR-D1", 7, "2026-11-24", {"kind": "production"}),
    ]
    for sku, ref, quantity, expected, extra in supply:
        await api.supply(sku, ref, quantity, expected, **extra)
    kinds = {"A": ["standard", "manufacturer", "indefinite"], "B": ["custom", "dropship"]}
    kinds |= {"C": ["seasonal", "standard"], "D": ["preorder", "standard"]}
    for number in range(1001, 1031):
        lines = [
            backordered(str(i), sku, rng.randint(1, 3), rng.choice(kinds[sku]))
            for i, sku in enumerate(rng.sample("ABCD", k=rng.randint(1, 3)), start=1)
        ]
        placed = dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC) + dt.timedelta(
            hours=rng.randint(0, 740)
        )
        await api.place(str(number), lines, placed_at=placed.isoformat().replace("+00:00", "Z"))
    now = START
    for _ in range(7):
        await _change_behind_the_engine(db, brand.id, rng)
        now += dt.timedelta(days=rng.choice([0, 1, 3, 6]), hours=rng.randint(0, 20))
        await _check_step(db, brand.id, now)
        # The same moment again: nothing left to do.
        summary = await etas.recompute_brand(db, brand.id, now)
        assert (summary.changed_lines, summary.events, summary.orders_bumped) == (0, 0, 0)
