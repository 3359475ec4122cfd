"""The ETA engine on stored data: load queues, run the pure core, write back what changed.

`recompute(conn, brand_id, skus, now)` re-dates the waiting lines of the given SKUs (or all of
the brand's when `skus` is None) inside the caller's transaction:

- lines covered by on-hand stock are served: they become `in_stock` (ready to ship), the units
  leave `skus.on_hand`, a `backorder_allocated` event is recorded, and the rest move up the queue;
- every waiting line's queue, position, dates, reason and window state are stored;
- `eta_changed` is recorded when ship-by moved by at least the brand's threshold from what the
  shopper was last told (so small moves add up and the same news is never told twice), or when a
  line gained or lost a date; `window_at_risk` / `window_expired` when a line enters that state
  and its choice for that reason is opened (once per line and reason: a date that moves back
  and forth across the window's end does not tell it again), with the choice deadline and the
  brand's default action;
- an order whose stored ETAs changed at all gets a new version, so pages refresh (a line dated
  for the first time is part of the change that created it, which already counted).

Running it twice in a row changes nothing and records nothing.

On a large backlog SQLAlchemy's per-row and per-value work was most of the cost, so the hot
path uses the driver's own SQL: waiting lines are read as the driver's rows (`fetch_rows`) and
kept as such, values go through the processors SQLAlchemy would apply but once per distinct
value, only rows whose values changed are written, and rows, choices and events go in with one
statement per chunk (`exec_driver_sql`: an executemany on SQLite, unnest arrays on PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.eta import (
    BackorderType,
    BrandPolicy,
    EtaChange,
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
from app.storage import changes
from app.storage import choices as choice_store
from app.storage.database import Database
from app.storage.dialect import Params, bind_processor, fetch_rows, result_processor
from app.storage.schema import UTCDateTime, brands, inbound_supply, order_lines, orders, skus
from app.storage.schema import events as event_table
from messaging import outbox

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
_WINDOW_EVENTS = {
    WindowState.AT_RISK.value: "window_at_risk",
    WindowState.EXPIRED.value: "window_expired",
}
_BACKORDER_TYPES = {kind.value: kind for kind in BackorderType}

# A waiting line as _load_waiting reads it: these columns, in this order.
_WAITING = (
    "SELECT l.id, l.order_id, l.ref, l.sku, l.quantity, l.backorder_type,"  # noqa: S608
    " l.eta_computed_at IS NOT NULL, "
    + ", ".join(f"l.{name}" for name in (*ETA_FIELDS, *ANNOUNCED_FIELDS))
    + ", o.placed_at, o.shipping_region,"
    " (SELECT coalesce(sum(s.quantity), 0) FROM shipment_lines s WHERE s.order_line_id = l.id)"
    " FROM order_lines l JOIN orders o ON o.id = l.order_id"
)
_ID, _ORDER, _REF, _SKU, _QUANTITY, _TYPE, _COMPUTED = range(7)
_QUEUE, _POSITION, _AVAILABLE, _SHIP_BY, _FROM, _TO, _REASON, _SUPPLY, _WIDENING, _WINDOW = range(
    7, 17
)
_ANNOUNCED_SHIP_BY, _ANNOUNCED_FROM, _ANNOUNCED_TO, _PLACED, _REGION, _SHIPPED = range(17, 23)

# Rows per UPDATE … FROM unnest(…) or INSERT … SELECT FROM unnest(…) on PostgreSQL (each
# statement walks the primary key once, so fewer and larger is faster); ids per IN list.
_WRITE_CHUNK = 100_000
_ID_CHUNK = 5_000
_CHUNK_SKUS = 5_000  # SKUs per recompute_brand chunk


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


class _Converted(dict[Any, Any]):
    """Values and what they convert to, each distinct value converted once.

    A backlog holds millions of dates but only a few hundred distinct ones.
    """

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, value: Any) -> Any:
        converted = self[value] = None if value is None else self.convert(value)
        return converted


@dataclass
class _Backlog:
    """Waiting lines as the engine takes them, and the rows they were read from."""

    lines: list[WaitingLine]
    rows: dict[int, Sequence[Any]]  # by line id, the columns `_WAITING` selects
    placed_at: dict[int, dt.datetime]  # by order id, in the brand's timezone


async def _load_waiting(
    conn: AsyncConnection,
    brand_id: int,
    sku_filter: Collection[str] | None,
    timezone: zoneinfo.ZoneInfo,
) -> _Backlog:
    """Read waiting lines; order times in the brand's timezone, so dates are its calendar's."""
    params = Params(conn)
    sql = f"{_WAITING} WHERE l.brand_id = {params.add(brand_id)} AND l.status = 'backordered'"
    if sku_filter is not None:
        sql += " AND " + params.any_of("l.sku", sorted(sku_filter), "text")
    # load_rules ran a statement first, so this read is inside the caller's transaction.
    result = await fetch_rows(conn, sql, params.values)
    read_time = _time_reader(conn)
    backlog = _Backlog([], {}, {})
    lines, rows, placed_at = backlog.lines, backlog.rows, backlog.placed_at
    kinds = _BACKORDER_TYPES
    for row in result:
        left = row[_QUANTITY] - row[_SHIPPED]
        if left <= 0:
            continue
        order_id = row[_ORDER]
        placed = placed_at.get(order_id)
        if placed is None:
            placed = placed_at[order_id] = read_time(row[_PLACED]).astimezone(timezone)
        kind = row[_TYPE] or "standard"
        line_id = row[_ID]
        lines.append(
            WaitingLine(
                line_id,
                order_id,
                row[_SKU],
                left,
                placed,
                kinds.get(kind) or BackorderType(kind),
                row[_REGION],
            )
        )
        rows[line_id] = row
    return backlog


def _time_reader(conn: AsyncConnection) -> Callable[[Any], dt.datetime]:
    """Return what reads a stored time as UTCDateTime does (aware, in UTC), quickly."""
    read = UTCDateTime().process_result_value
    dialect = conn.dialect

    def read_time(value: Any) -> dt.datetime:
        if isinstance(value, str):
            # SQLite text, naive in UTC: parsed as UTC at once (datetime.replace is slow).
            try:
                return dt.datetime.fromisoformat(value + "+00:00")
            except ValueError:
                pass
        parsed = read(value, dialect)
        if parsed is None:
            raise ValueError("a stored time is missing")
        return parsed

    return read_time


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
            # Redundant (a brand's supply is for its SKUs) but it lets SQLite start from the
            # SKUs' unique index instead of scanning every inbound row.
            skus.c.brand_id == brand_id,
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
    backlog = await _load_waiting(conn, brand_id, sku_filter, rules.timezone)
    waiting, rows = backlog.lines, backlog.rows
    if not waiting:
        return summary
    supplies = await _load_supply(conn, brand_id, sku_filter)
    etas = allocate(waiting, supplies.values(), rules.policy, today)

    served = [w for w in waiting if etas[w.line_id].reason == Reason.IN_STOCK]
    if served:
        taken = await _serve(conn, brand_id, served, rows, now)
        summary.served_lines = len(served)
        served_ids = {w.line_id for w in served}
        waiting = [w for w in waiting if w.line_id not in served_ids]
        for line_id in served_ids:
            del rows[line_id]
        for sku, units in taken.items():
            supplies[sku] = dataclasses.replace(
                supplies[sku], on_hand=supplies[sku].on_hand - units
            )
        # Queues are per SKU: only those that were served move up.
        moved = allocate(
            [w for w in waiting if w.sku in taken],
            [supplies[sku] for sku in taken],
            rules.policy,
            today,
        )
        etas = {
            line_id: moved.get(line_id, eta)
            for line_id, eta in etas.items()
            if line_id not in served_ids
        }
    summary.lines = len(waiting)

    date_of = _Converted(result_processor(conn, order_lines.c.ship_by))
    news = _news(etas, rows, date_of, rules.threshold_days)
    told = {change.line_id for change in news}
    updates, changed_orders, entered = _compare(
        conn, etas, backlog, told, date_of, rules.policy.fulfillment_window_days, today, now
    )
    # In id order, each page of the table is written once. Written before the choices that
    # refer to them: on PostgreSQL their foreign key checks then find the rows already locked.
    updates.sort(key=_last)
    await _write_etas(conn, updates)

    # The end of the brand's day, `choice_deadline_days` from today: a date a shopper can read.
    last_day = today + dt.timedelta(days=rules.choice_deadline_days)
    deadline = dt.datetime.combine(last_day, dt.time(23, 59, 59), rules.timezone).astimezone(dt.UTC)
    # By order (stable, so an order's lines keep their queue order): the choices' and events'
    # index entries then go in nearly in key order.
    entered.sort(key=_first)
    opened = await choice_store.offer(conn, brand_id, entered, deadline, rules.default_action, now)
    to_json = bind_processor(conn, event_table.c.data)
    new_events = _eta_news(news, rows, to_json)
    new_events += _window_news(entered, opened, etas, backlog, rules, deadline.isoformat(), to_json)
    await _bump(conn, changed_orders, now)
    await _record(conn, brand_id, new_events, now)
    summary.changed_lines = len(updates)
    summary.events += len(new_events)
    summary.orders_bumped += len(changed_orders)
    return summary


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


def _last(item: tuple[Any, ...]) -> Any:
    return item[-1]


def _news(
    etas: dict[int, LineEta],
    rows: dict[int, Sequence[Any]],
    date_of: _Converted,
    threshold_days: int,
) -> list[EtaChange]:
    """Diff what each dated-before line's shopper was told against its new ETA.

    Only lines whose told ship-by differs from the new one can be news, so only they are diffed.
    """
    told: list[LineEta] = []
    new: list[LineEta] = []
    for line_id, eta in etas.items():
        row = rows[line_id]
        if row[_COMPUTED] and date_of[row[_ANNOUNCED_SHIP_BY]] != eta.ship_by:
            told.append(
                LineEta(
                    line_id,
                    Queue.STOCK,
                    0,
                    None,
                    date_of[row[_ANNOUNCED_SHIP_BY]],
                    date_of[row[_ANNOUNCED_FROM]],
                    date_of[row[_ANNOUNCED_TO]],
                    Reason.NO_SUPPLY,
                    None,
                )
            )
            new.append(eta)
    return diff_etas(told, new, threshold_days)


def _compare(
    conn: AsyncConnection,
    etas: dict[int, LineEta],
    backlog: _Backlog,
    told: set[int],
    date_of: _Converted,
    window_days: int,
    today: dt.date,
    now: dt.datetime,
) -> tuple[list[tuple[Any, ...]], set[int], list[choice_store.Offer]]:
    """Compare new ETAs with the stored ones.

    Return the rows to write (driver values in `_UPDATE_COLUMNS` order, then the id), the
    orders whose dated-before lines changed, and a choice to offer for each line that entered
    an at-risk or expired window.
    """
    to_driver = _Converted(bind_processor(conn, order_lines.c.ship_by))
    computed_at = bind_processor(conn, order_lines.c.eta_computed_at)(now)
    rows, placed_at = backlog.rows, backlog.placed_at
    # A line's window state depends only on its order's day, its ship-by and its widening.
    states: dict[tuple[dt.date, dt.date | None, int], str] = {}
    updates: list[tuple[Any, ...]] = []
    changed_orders: set[int] = set()
    entered: list[choice_store.Offer] = []
    offer = choice_store.Offer
    for line_id, eta in etas.items():
        row = rows[line_id]
        order_id = row[_ORDER]
        ordered_at = placed_at[order_id]
        ship_by = eta.ship_by
        widening = eta.widening_days
        key = (ordered_at.date(), ship_by, widening)
        state = states.get(key)
        if state is None:
            state = states[key] = window_state(ordered_at, window_days, eta, today, False).value
        if state != row[_WINDOW] and state in _WINDOW_EVENTS:
            entered.append(offer(order_id, line_id, row[_SKU], state))
        if not row[_COMPUTED]:
            # Dated for the first time: all is written, and what it shows is what was told.
            announced = (ship_by, eta.delivery_from, eta.delivery_to)
        else:
            retold = line_id in told and (ship_by, eta.delivery_from, eta.delivery_to) != (
                date_of[row[_ANNOUNCED_SHIP_BY]],
                date_of[row[_ANNOUNCED_FROM]],
                date_of[row[_ANNOUNCED_TO]],
            )
            if not retold and (
                eta.queue,
                eta.queue_position,
                eta.available_from,
                ship_by,
                eta.delivery_from,
                eta.delivery_to,
                eta.reason,
                eta.supply_ref,
                widening,
                state,
            ) == (
                row[_QUEUE],
                row[_POSITION],
                date_of[row[_AVAILABLE]],
                date_of[row[_SHIP_BY]],
                date_of[row[_FROM]],
                date_of[row[_TO]],
                row[_REASON],
                row[_SUPPLY],
                row[_WIDENING],
                row[_WINDOW],
            ):
                continue
            # A line dated for the first time belongs to the change that created it, which
            # already bumped its order; a line dated before changes its order's page.
            changed_orders.add(order_id)
            if line_id in told:
                announced = (ship_by, eta.delivery_from, eta.delivery_to)
            else:
                announced = (
                    date_of[row[_ANNOUNCED_SHIP_BY]],
                    date_of[row[_ANNOUNCED_FROM]],
                    date_of[row[_ANNOUNCED_TO]],
                )
        updates.append(
            (
                eta.queue.value,
                eta.queue_position,
                to_driver[eta.available_from],
                to_driver[ship_by],
                to_driver[eta.delivery_from],
                to_driver[eta.delivery_to],
                eta.reason.value,
                eta.supply_ref,
                widening,
                state,
                to_driver[announced[0]],
                to_driver[announced[1]],
                to_driver[announced[2]],
                computed_at,
                line_id,
            )
        )
    return updates, changed_orders, entered


# An event to record: order id, type, and its data as the driver takes it (JSON text).
_Event = tuple[int | None, str, Any]


def _eta_news(
    news: list[EtaChange], rows: dict[int, Sequence[Any]], to_json: Callable[[Any], Any]
) -> list[_Event]:
    """Tell each order's shopper which of its lines moved: an event per order."""
    by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
    iso = _Converted(dt.date.isoformat)
    for change in news:
        row = rows[change.line_id]
        by_order[row[_ORDER]].append(
            {
                "line": row[_REF],
                "sku": row[_SKU],
                "direction": change.direction.value,
                "shift_days": change.shift_days,
                "old": {
                    "ship_by": iso[change.old_ship_by],
                    "delivery": [iso[d] for d in change.old_delivery]
                    if change.old_delivery
                    else None,
                },
                "new": {
                    "ship_by": iso[change.new_ship_by],
                    "delivery": [iso[d] for d in change.new_delivery]
                    if change.new_delivery
                    else None,
                },
            }
        )
    return [
        (order_id, "eta_changed", to_json({"lines": lines})) for order_id, lines in by_order.items()
    ]


def _window_news(
    entered: list[choice_store.Offer],
    opened: set[tuple[int, str]],
    etas: dict[int, LineEta],
    backlog: _Backlog,
    rules: BrandRules,
    deadline: str,
    to_json: Callable[[Any], Any],
) -> list[_Event]:
    """Tell each order's shopper which lines' choices just opened: an event per order and state.

    Only a choice opened now is news, so a line whose date moves back and forth across the
    window's end is told once. `entered` comes in order-id order, so each order's events are
    complete (and serialised) before the next order's begin.
    """
    news: list[_Event] = []
    iso = _Converted(dt.date.isoformat)
    days = rules.policy.fulfillment_window_days
    ends: dict[dt.date, str] = {}  # the window's last day, by the day the order was placed
    current: int | None = None
    by_reason: dict[str, list[dict[str, str | None]]] = {}

    def tell() -> None:
        for reason, lines in by_reason.items():
            data = {
                "lines": lines,
                "choice_deadline": deadline,
                "default_action": rules.default_action,
            }
            news.append((current, _WINDOW_EVENTS[reason], to_json(data)))

    for order_id, line_id, sku, reason in entered:
        if (line_id, reason) not in opened:
            continue
        if order_id != current:
            tell()
            current, by_reason = order_id, {}
        placed = backlog.placed_at[order_id]
        end = ends.get(placed.date())
        if end is None:
            end = ends[placed.date()] = window_end(placed, days).isoformat()
        lines = by_reason.get(reason)
        if lines is None:
            lines = by_reason[reason] = []
        lines.append(
            {
                "line": backlog.rows[line_id][_REF],
                "sku": sku,
                "window_end": end,
                "ship_by": iso[etas[line_id].ship_by],
            }
        )
    tell()
    return news


_UPDATE_COLUMNS = (*ETA_FIELDS, *ANNOUNCED_FIELDS, "eta_computed_at")
_SQLITE_UPDATE = (
    "UPDATE order_lines SET "  # noqa: S608
    + ", ".join(f"{name} = ?" for name in _UPDATE_COLUMNS)
    + " WHERE id = ?"
)
_PG_TYPES = {
    "queue_position": "integer",
    "available_from": "date",
    "ship_by": "date",
    "delivery_from": "date",
    "delivery_to": "date",
    "eta_widening_days": "integer",
    "announced_ship_by": "date",
    "announced_delivery_from": "date",
    "announced_delivery_to": "date",
}
_PG_ARRAYS = (*ETA_FIELDS, *ANNOUNCED_FIELDS)
_PG_UPDATE = (
    "UPDATE order_lines AS l SET "  # noqa: S608
    + ", ".join(f"{name} = v.{name}" for name in _PG_ARRAYS)
    + f", eta_computed_at = ${len(_PG_ARRAYS) + 2}"
    + " FROM unnest($1::bigint[], "
    + ", ".join(
        f"${i}::{_PG_TYPES.get(name, 'text')}[]" for i, name in enumerate(_PG_ARRAYS, start=2)
    )
    + f") AS v(id, {', '.join(_PG_ARRAYS)}) WHERE l.id = v.id"
)
_PG_LOCK = "SELECT 1 FROM order_lines WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE"


async def _write_etas(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Store the rows `_compare` returned: an executemany on SQLite, unnest on PostgreSQL.

    One UPDATE … FROM unnest(…) per chunk writes about twice as fast as asyncpg's executemany.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        await conn.exec_driver_sql(_SQLITE_UPDATE, list(rows))
        return
    for start in range(0, len(rows), _WRITE_CHUNK):
        columns = list(zip(*rows[start : start + _WRITE_CHUNK], strict=True))
        # Row tuples end with eta_computed_at (the same for all) and the id.
        ids = list(columns[-1])
        # A join locks rows in whatever order its plan meets them; writers of the same SKU
        # must take them in one order, or they deadlock.
        await conn.exec_driver_sql(_PG_LOCK, (ids,))
        await conn.exec_driver_sql(
            _PG_UPDATE, (ids, *(list(c) for c in columns[:-2]), columns[-2][0])
        )


_EVENTS_SQLITE = (
    "INSERT INTO events (brand_id, order_id, type, data, created_at) VALUES (?, ?, ?, ?, ?)"
)
# txid is left to its server default: the writing transaction's id.
_EVENTS_PG = (
    "INSERT INTO events (brand_id, order_id, type, data, created_at)"
    " SELECT $1, v.order_id, v.type, v.data::jsonb, $2"
    " FROM unnest($3::bigint[], $4::text[], $5::text[]) AS v(order_id, type, data)"
)


async def _record(
    conn: AsyncConnection, brand_id: int, new: Sequence[_Event], now: dt.datetime
) -> None:
    """Append events as `events.record` would (the same rows, ids in this order), in bulk.

    A first run records an event per order; SQLAlchemy's per-row parameter handling was a
    large part of its time. Data comes serialised, as `bind_processor` makes it.
    """
    if not new:
        return
    # News for the shopper and the brand's webhooks go into the outbox in this transaction.
    await outbox.plan(conn, brand_id, new, now)
    created_at = bind_processor(conn, event_table.c.created_at)(now)
    if conn.dialect.name != "postgresql":
        await conn.exec_driver_sql(
            _EVENTS_SQLITE,
            [(brand_id, order_id, kind, data, created_at) for order_id, kind, data in new],
        )
        return
    for start in range(0, len(new), _WRITE_CHUNK):
        order_ids, kinds, data = zip(*new[start : start + _WRITE_CHUNK], strict=True)
        await conn.exec_driver_sql(
            _EVENTS_PG, (brand_id, created_at, list(order_ids), list(kinds), list(data))
        )


async def _bump(conn: AsyncConnection, order_ids: Iterable[int], now: dt.datetime) -> None:
    ids = sorted(order_ids)
    if not ids:
        return
    stamp = bind_processor(conn, orders.c.updated_at)(now)
    versions: dict[int, int] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        params = Params(conn)
        sql = (
            f"UPDATE orders SET version = version + 1, updated_at = {params.add(stamp)}"  # noqa: S608
            f" WHERE {params.any_of('id', ids[start : start + _ID_CHUNK], 'bigint')}"
            " RETURNING id, version"
        )
        bumped: Iterable[Sequence[int]] = await conn.exec_driver_sql(sql, tuple(params.values))
        versions.update((row[0], row[1]) for row in bumped)
    changes.note(conn, versions)


async def _serve(
    conn: AsyncConnection,
    brand_id: int,
    served: list[WaitingLine],
    rows: dict[int, Sequence[Any]],
    now: dt.datetime,
) -> dict[str, int]:
    """Hand on-hand units to the waiting lines they complete; return the units taken per SKU."""
    taken: dict[str, int] = defaultdict(int)
    by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in served:
        taken[line.sku] += line.quantity
        by_order[line.order_id].append(
            {"line": rows[line.line_id][_REF], "sku": line.sku, "quantity": line.quantity}
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
    to_json = bind_processor(conn, event_table.c.data)
    await _record(
        conn,
        brand_id,
        [
            (order_id, "backorder_allocated", to_json({"lines": lines}))
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
    db: Database, brand_id: int, now: dt.datetime, chunk_lines: int = 100_000
) -> Summary:
    """Recompute every waiting line of a brand, a chunk of whole SKUs per write transaction.

    Queues are per SKU, so chunks are independent, and each chunk is recomputed from what is
    stored when its own write transaction starts. An API write between two chunks re-dates its
    SKUs in its own transaction; later chunks read its result, and nothing computed before it
    is written after it. (Reading everything once and writing precomputed rows in table order
    would touch fewer pages, but nothing cheap tells which SKUs a write in between changed.)

    A chunk takes SKUs, in name order, until it holds about `chunk_lines` waiting lines (a
    larger SKU goes alone) or 5,000 SKUs (so statements' lists stay short). A SKU's lines are
    spread over the whole table, so each transaction writes pages all over it: fewer, larger
    chunks write each page fewer times, and the bound keeps each transaction to a few seconds,
    so the single SQLite writer stays available to API requests during a long nightly run.
    """
    async with db.read() as conn:
        counts = await _waiting_counts(conn, brand_id)
    total = Summary()
    for chunk in _chunks(counts, chunk_lines):
        async with db.write() as conn:
            part = await recompute(conn, brand_id, chunk, now)
        for name in ("lines", "changed_lines", "served_lines", "events", "orders_bumped"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
    return total


def _chunks(counts: list[tuple[str, int]], chunk_lines: int) -> Iterator[list[str]]:
    """Group SKUs, in order, into chunks of about `chunk_lines` lines and at most 5,000 SKUs."""
    chunk: list[str] = []
    size = 0
    for sku, lines in counts:
        if chunk and (size + lines > chunk_lines or len(chunk) == _CHUNK_SKUS):
            yield chunk
            chunk, size = [], 0
        chunk.append(sku)
        size += lines
    if chunk:
        yield chunk


async def _waiting_counts(conn: AsyncConnection, brand_id: int) -> list[tuple[str, int]]:
    """List the brand's SKUs that have waiting lines, in name order, with how many each."""
    rows = await conn.execute(
        select(order_lines.c.sku, func.count())
        .where(order_lines.c.brand_id == brand_id, order_lines.c.status == "backordered")
        .group_by(order_lines.c.sku)
        .order_by(order_lines.c.sku)
    )
    return [(row[0], row[1]) for row in rows]
