"""The ETA engine on stored data: load queues, run the pure core, write back what changed.

`recompute(conn, brand_id, skus, now)` re-dates the waiting lines of the given SKUs (or all of
the brand's when `skus` is None) inside the caller's transaction:

- lines covered by on-hand stock are served: they become `in_stock` (ready to ship), the units
  leave `skus.on_hand`, a `backorder_allocated` event is recorded, and the rest move up the queue;
- every waiting line's queue, position, dates, reason and window state are stored;
- `eta_changed` is recorded when ship-by moved by at least the brand's threshold from what the
  shopper was last told (so small moves add up and the same news is never told twice), or when a
  line gained or lost a date; `window_at_risk` / `window_expired` when a line enters that state,
  with the choice deadline and the brand's default action;
- an order whose stored ETAs changed at all gets a new version, so pages refresh (a line dated
  for the first time is part of the change that created it, which already counted).

Running it twice in a row changes nothing and records nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.eta import (
    BackorderType,
    BrandPolicy,
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
from app.storage import changes, events
from app.storage import choices as choice_store
from app.storage.database import Database
from app.storage.schema import brands, inbound_supply, order_lines, orders, shipment_lines, skus

ETA_FIELDS = (
    "eta_queue",
    "queue_position",
    "available_from",
    "ship_by",
    "delivery_from",
    "delivery_to",
    "eta_reason",
    "eta_supply_ref",
    "eta_widening_days",
    "window_state",
)
ANNOUNCED_FIELDS = ("announced_ship_by", "announced_delivery_from", "announced_delivery_to")
_WINDOW_EVENTS = {WindowState.AT_RISK: "window_at_risk", WindowState.EXPIRED: "window_expired"}


@dataclass(frozen=True)
class BrandRules:
    """What the engine needs to know about a brand."""

    policy: BrandPolicy
    timezone: zoneinfo.ZoneInfo
    threshold_days: int
    choice_deadline_days: int
    default_action: str

    def today(self, now: dt.datetime) -> dt.date:
        """Return the brand's calendar date at `now`."""
        return now.astimezone(self.timezone).date()


@dataclass
class Summary:
    """What one recompute did."""

    lines: int = 0
    changed_lines: int = 0
    served_lines: int = 0
    events: int = 0
    orders_bumped: int = 0


async def load_rules(conn: AsyncConnection, brand_id: int) -> BrandRules:
    """Read a brand's ETA policy."""
    row = (await conn.execute(select(brands).where(brands.c.id == brand_id))).one()
    return BrandRules(
        policy=BrandPolicy(
            handling_days=row.handling_days,
            transit_days=(row.transit_days_min, row.transit_days_max),
            region_transit_days={k: (v[0], v[1]) for k, v in row.transit_by_region.items()},
            consolidation_window_days=row.consolidation_window_days,
            fulfillment_window_days=row.fulfillment_window_days,
            preorders_own_queue=row.preorders_own_queue,
            confidence_widening_days=row.confidence_widening_days,
        ),
        timezone=zoneinfo.ZoneInfo(row.timezone),
        threshold_days=row.eta_change_threshold_days,
        choice_deadline_days=row.choice_deadline_days,
        default_action=row.choice_default_action,
    )


@dataclass(slots=True)
class _Stored:
    id: int
    order_id: int
    ref: str
    sku: str
    placed_at: dt.datetime
    values: dict[str, Any]
    computed: bool


async def _load_waiting(
    conn: AsyncConnection,
    brand_id: int,
    sku_filter: Collection[str] | None,
    timezone: zoneinfo.ZoneInfo,
) -> tuple[list[WaitingLine], dict[int, _Stored]]:
    """Read waiting lines; order times in the brand's timezone, so dates are its calendar's."""
    shipped = (
        select(func.coalesce(func.sum(shipment_lines.c.quantity), 0))
        .where(shipment_lines.c.order_line_id == order_lines.c.id)
        .scalar_subquery()
    )
    stmt = (
        select(
            order_lines.c.id,
            order_lines.c.order_id,
            order_lines.c.ref,
            order_lines.c.sku,
            order_lines.c.quantity,
            order_lines.c.backorder_type,
            order_lines.c.eta_computed_at,
            *(order_lines.c[name] for name in (*ETA_FIELDS, *ANNOUNCED_FIELDS)),
            orders.c.placed_at,
            orders.c.shipping_region,
            shipped.label("shipped"),
        )
        .join(orders, orders.c.id == order_lines.c.order_id)
        .where(order_lines.c.brand_id == brand_id, order_lines.c.status == "backordered")
    )
    if sku_filter is not None:
        stmt = stmt.where(order_lines.c.sku.in_(list(sku_filter)))
    waiting: list[WaitingLine] = []
    stored: dict[int, _Stored] = {}
    for r in await conn.execute(stmt):
        left = r.quantity - r.shipped
        placed_at = r.placed_at.astimezone(timezone)
        if left <= 0:
            continue
        waiting.append(
            WaitingLine(
                r.id,
                r.order_id,
                r.sku,
                left,
                placed_at,
                BackorderType(r.backorder_type or "standard"),
                r.shipping_region,
            )
        )
        stored[r.id] = _Stored(
            r.id,
            r.order_id,
            r.ref,
            r.sku,
            placed_at,
            {name: getattr(r, name) for name in (*ETA_FIELDS, *ANNOUNCED_FIELDS)},
            r.eta_computed_at is not None,
        )
    return waiting, stored


async def _load_supply(
    conn: AsyncConnection, brand_id: int, sku_filter: Collection[str] | None
) -> dict[str, SkuSupply]:
    sku_stmt = select(skus).where(skus.c.brand_id == brand_id)
    supply_stmt = (
        select(
            skus.c.sku,
            inbound_supply.c.ref,
            inbound_supply.c.kind,
            (inbound_supply.c.quantity - inbound_supply.c.received_quantity).label("left"),
            inbound_supply.c.expected_date,
            inbound_supply.c.confidence,
        )
        .join(skus, skus.c.id == inbound_supply.c.sku_id)
        .where(
            inbound_supply.c.brand_id == brand_id,
            inbound_supply.c.quantity > inbound_supply.c.received_quantity,
        )
    )
    if sku_filter is not None:
        sku_stmt = sku_stmt.where(skus.c.sku.in_(list(sku_filter)))
        supply_stmt = supply_stmt.where(skus.c.sku.in_(list(sku_filter)))
    inbound: dict[str, list[Inbound]] = defaultdict(list)
    for r in await conn.execute(supply_stmt):
        inbound[r.sku].append(
            Inbound(r.ref, r.left, r.expected_date, r.confidence, SupplyKind(r.kind))
        )
    return {
        r.sku: SkuSupply(
            r.sku,
            r.on_hand,
            tuple(inbound.get(r.sku, ())),
            r.production_lead_days,
            r.release_date,
            r.season_start,
        )
        for r in await conn.execute(sku_stmt)
    }


def _eta_values(eta: LineEta, state: WindowState) -> dict[str, Any]:
    return {
        "eta_queue": eta.queue.value,
        "queue_position": eta.queue_position,
        "available_from": eta.available_from,
        "ship_by": eta.ship_by,
        "delivery_from": eta.delivery_from,
        "delivery_to": eta.delivery_to,
        "eta_reason": eta.reason.value,
        "eta_supply_ref": eta.supply_ref,
        "eta_widening_days": eta.widening_days,
        "window_state": state.value,
    }


def _announced(line: _Stored) -> LineEta:
    v = line.values
    return LineEta(
        line.id,
        Queue.STOCK,
        0,
        None,
        v["announced_ship_by"],
        v["announced_delivery_from"],
        v["announced_delivery_to"],
        Reason.NO_SUPPLY,
        None,
    )


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


async def recompute(
    conn: AsyncConnection,
    brand_id: int,
    sku_filter: Collection[str] | None,
    now: dt.datetime,
) -> Summary:
    """Re-date the waiting lines of these SKUs (all the brand's when None); see the module doc."""
    summary = Summary()
    if sku_filter is not None and not sku_filter:
        return summary
    rules = await load_rules(conn, brand_id)
    today = rules.today(now)
    waiting, stored = await _load_waiting(conn, brand_id, sku_filter, rules.timezone)
    if not waiting:
        return summary
    supplies = await _load_supply(conn, brand_id, sku_filter)
    etas = allocate(waiting, supplies.values(), rules.policy, today)

    served = [w for w in waiting if etas[w.line_id].reason == Reason.IN_STOCK]
    if served:
        taken = await _serve(conn, brand_id, served, stored, now)
        summary.served_lines = len(served)
        served_ids = {w.line_id for w in served}
        waiting = [w for w in waiting if w.line_id not in served_ids]
        for line_id in served_ids:
            del stored[line_id]
        for sku, units in taken.items():
            supplies[sku] = dataclasses.replace(
                supplies[sku], on_hand=supplies[sku].on_hand - units
            )
        etas = allocate(waiting, supplies.values(), rules.policy, today)
    summary.lines = len(waiting)

    new_events: list[events.NewEvent] = []
    changed_orders: set[int] = set()
    updates: list[dict[str, Any]] = []
    changes_by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
    window_news: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    offers: list[choice_store.Offer] = []

    announced = [_announced(line) for line in stored.values() if line.computed]
    news = diff_etas(announced, etas.values(), rules.threshold_days)
    told = {change.line_id for change in news}
    for change in news:
        line = stored[change.line_id]
        changes_by_order[line.order_id].append(
            {
                "line": line.ref,
                "sku": line.sku,
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

    for line_id, eta in etas.items():
        line = stored[line_id]
        state = window_state(
            line.placed_at, rules.policy.fulfillment_window_days, eta, today, shipped=False
        )
        values = _eta_values(eta, state)
        announce = not line.computed or line_id in told
        if announce:
            values.update(
                announced_ship_by=eta.ship_by,
                announced_delivery_from=eta.delivery_from,
                announced_delivery_to=eta.delivery_to,
            )
        else:
            values.update({name: line.values[name] for name in ANNOUNCED_FIELDS})
        if state.value != line.values["window_state"] and state in _WINDOW_EVENTS:
            offers.append(choice_store.Offer(line.order_id, line_id, line.sku, state.value))
            last_day = window_end(line.placed_at, rules.policy.fulfillment_window_days)
            window_news[(line.order_id, _WINDOW_EVENTS[state])].append(
                {
                    "line": line.ref,
                    "sku": line.sku,
                    "window_end": last_day.isoformat(),
                    "ship_by": _iso(eta.ship_by),
                }
            )
        if values != line.values or not line.computed:
            updates.append({"_id": line_id, **values, "eta_computed_at": now})
            if line.computed:
                # A line dated for the first time belongs to a change that already bumped it.
                changed_orders.add(line.order_id)

    # The end of the brand's day, `choice_deadline_days` from today: a date a shopper can read.
    last_day = today + dt.timedelta(days=rules.choice_deadline_days)
    deadline = dt.datetime.combine(last_day, dt.time(23, 59, 59), rules.timezone).astimezone(dt.UTC)
    await choice_store.offer(conn, brand_id, offers, deadline, rules.default_action, now)
    for order_id, lines in changes_by_order.items():
        new_events.append(events.NewEvent(order_id, "eta_changed", {"lines": lines}))
    for (order_id, kind), lines in window_news.items():
        new_events.append(
            events.NewEvent(
                order_id,
                kind,
                {
                    "lines": lines,
                    "choice_deadline": deadline.isoformat(),
                    "default_action": rules.default_action,
                },
            )
        )
    if updates:
        await conn.execute(
            update(order_lines)
            .where(order_lines.c.id == bindparam("_id"))
            .values(
                {
                    name: bindparam(name)
                    for name in (*ETA_FIELDS, *ANNOUNCED_FIELDS, "eta_computed_at")
                }
            ),
            updates,
        )
    await _bump(conn, changed_orders, now)
    await events.record(conn, brand_id, new_events, now)
    summary.changed_lines = len(updates)
    summary.events += len(new_events)
    summary.orders_bumped += len(changed_orders)
    return summary


async def _bump(conn: AsyncConnection, order_ids: Iterable[int], now: dt.datetime) -> None:
    ids = sorted(order_ids)
    if ids:
        bumped = await conn.execute(
            update(orders)
            .where(orders.c.id.in_(ids))
            .values(version=orders.c.version + 1, updated_at=now)
            .returning(orders.c.id, orders.c.version)
        )
        changes.note(conn, {row.id: row.version for row in bumped})


async def _serve(
    conn: AsyncConnection,
    brand_id: int,
    served: list[WaitingLine],
    stored: dict[int, _Stored],
    now: dt.datetime,
) -> dict[str, int]:
    """Hand on-hand units to the waiting lines they complete; return the units taken per SKU."""
    taken: dict[str, int] = defaultdict(int)
    by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in served:
        taken[line.sku] += line.quantity
        by_order[line.order_id].append(
            {"line": stored[line.line_id].ref, "sku": line.sku, "quantity": line.quantity}
        )
    await conn.execute(
        update(order_lines)
        .where(order_lines.c.id == bindparam("_id"))
        .values(
            status="in_stock",
            eta_reason=Reason.IN_STOCK.value,
            window_state=None,
            eta_computed_at=now,
            allocated_at=now,
            updated_at=now,
        ),
        [{"_id": line.line_id} for line in served],
    )
    await conn.execute(
        update(skus)
        .where(skus.c.brand_id == brand_id, skus.c.sku == bindparam("_sku"))
        .values(on_hand=skus.c.on_hand - bindparam("_taken"), updated_at=now),
        [{"_sku": sku, "_taken": units} for sku, units in taken.items()],
    )
    await _bump(conn, by_order, now)
    await events.record(
        conn,
        brand_id,
        [
            events.NewEvent(order_id, "backorder_allocated", {"lines": lines})
            for order_id, lines in by_order.items()
        ],
        now,
    )
    return taken


async def waiting_skus(conn: AsyncConnection, brand_id: int) -> list[str]:
    """List the brand's SKUs that have waiting lines."""
    rows = await conn.execute(
        select(order_lines.c.sku)
        .where(order_lines.c.brand_id == brand_id, order_lines.c.status == "backordered")
        .distinct()
        .order_by(order_lines.c.sku)
    )
    return list(rows.scalars())


async def recompute_brand(
    db: Database, brand_id: int, now: dt.datetime, chunk: int = 500
) -> Summary:
    """Recompute every waiting line of a brand, a chunk of SKUs per write transaction.

    Queues are per SKU, so chunks are independent; short transactions keep the single SQLite
    writer available to API requests during a long nightly run.
    """
    async with db.read() as conn:
        names = await waiting_skus(conn, brand_id)
    total = Summary()
    for start in range(0, len(names), chunk):
        async with db.write() as conn:
            part = await recompute(conn, brand_id, names[start : start + chunk], now)
        for name in ("lines", "changed_lines", "served_lines", "events", "orders_bumped"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
    return total
