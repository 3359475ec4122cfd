"""Choices as stored: offered by the ETA engine, decided from the page or by SMS, defaulted.

Every way a choice moves goes through here and through the one state machine in
`app.domain.choices`: `offer` opens it (with the order's SMS code), `decide` takes the shopper's
answer from either side, `escalate` hands it to a person, `apply_deadlines` applies the brand's
default. Each change bumps the order's version and records a domain event.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import choices as machine
from app.domain.choices import ChoiceError
from app.storage import changes, etas, events
from app.storage.dialect import bind_processor
from app.storage.schema import choices, customers, order_lines, orders, skus

__all__ = [
    "ChoiceError",
    "Offer",
    "apply_deadlines",
    "decide",
    "escalate",
    "offer",
    "settle_refs",
]


class Offer(NamedTuple):
    """A choice to open: the line, its order and SKU, and why (at_risk | expired)."""

    order_id: int
    line_id: int
    sku: str
    reason: str  # at_risk | expired


async def offer(
    conn: AsyncConnection,
    brand_id: int,
    offers: Sequence[Offer],
    deadline: dt.datetime,
    default_action: str,
    now: dt.datetime,
) -> set[tuple[int, str]]:
    """Open a choice per line and reason, once; return the (line id, reason) pairs opened now.

    A repeat offer changes nothing and is not returned, so the news of it is told only once.
    Each choice carries its order's SMS code (see `_order_refs`).
    A night's run can open hundreds of thousands, so rows go in with the driver's own SQL, a
    chunk per statement, each value converted by SQLAlchemy's processors once.
    """
    if not offers:
        return set()
    names = sorted({o.sku for o in offers})
    to_json = bind_processor(conn, choices.c.alternatives)
    alternatives: dict[str, Any] = {}
    for start in range(0, len(names), _SKU_CHUNK):
        found = await conn.execute(
            select(skus.c.sku, skus.c.alternatives).where(
                skus.c.brand_id == brand_id, skus.c.sku.in_(names[start : start + _SKU_CHUNK])
            )
        )
        alternatives.update((row.sku, to_json(row.alternatives or [])) for row in found)
    none = to_json([])
    refs = await _order_refs(conn, brand_id, sorted({o.order_id for o in offers}))
    stamp = bind_processor(conn, choices.c.created_at)
    fixed = (brand_id, stamp(deadline), default_action, stamp(now))
    opened: set[tuple[int, str]] = set()
    chunk = _OFFER_CHUNK_PG if conn.dialect.name == "postgresql" else _OFFER_CHUNK_SQLITE
    for start in range(0, len(offers), chunk):
        rows = [
            (o.order_id, o.line_id, o.reason, alternatives.get(o.sku, none), refs[o.order_id])
            for o in offers[start : start + chunk]
        ]
        if conn.dialect.name == "postgresql":
            sql, params = _OFFER_PG, (*fixed, *(list(c) for c in zip(*rows, strict=True)))
        else:
            values = ", ".join(["(?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)"] * len(rows))
            sql = _OFFER_SQLITE.format(values=values)
            brand, due, action, created = fixed
            params = tuple(
                value
                for order_id, line_id, reason, alts, ref in rows
                for value in (
                    brand,
                    order_id,
                    line_id,
                    reason,
                    alts,
                    due,
                    action,
                    created,
                    created,
                    ref,
                )
            )
        result: Iterable[Sequence[Any]] = await conn.exec_driver_sql(sql, params)
        opened.update((row[0], row[1]) for row in result)
    return opened


_SKU_CHUNK = 5_000  # names per IN list
_OFFER_CHUNK_SQLITE = 2_000  # 10 values a row: within SQLite's 32,766 parameters per statement
_OFFER_CHUNK_PG = 50_000  # five arrays, whatever their length
_ID_CHUNK = 5_000  # ids or phone numbers per IN list
_OFFER_COLUMNS = (
    "brand_id, order_id, order_line_id, reason, alternatives, state,"
    " deadline, default_action, created_at, updated_at, short_ref"
)
_OFFER_SQLITE = (
    f"INSERT INTO choices ({_OFFER_COLUMNS}) VALUES {{values}}"  # noqa: S608
    " ON CONFLICT (order_line_id, reason) DO NOTHING RETURNING order_line_id, reason"
)
_OFFER_PG = (
    f"INSERT INTO choices ({_OFFER_COLUMNS})"  # noqa: S608
    " SELECT $1, v.order_id, v.line_id, v.reason, v.alternatives::jsonb, 'open', $2, $3, $4, $4,"
    " v.short_ref"
    " FROM unnest($5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[])"
    " AS v(order_id, line_id, reason, alternatives, short_ref)"
    " ON CONFLICT (order_line_id, reason) DO NOTHING RETURNING order_line_id, reason"
)


async def _order_refs(
    conn: AsyncConnection, brand_id: int, order_ids: Sequence[int]
) -> dict[int, str]:
    """Pick each offered order's SMS code: the one its open choices have, else a new one.

    A new code is derived from the order id and skips the codes of every undecided choice on
    orders whose customer has the same phone number (several customer records may share one).
    Two offers for one number written at the same moment may still pick the same code: that is
    rare (the ids would have to land on the same code) and is mended when a reply comes in
    (`settle_refs`), rather than serialising every offer on a per-number lock.
    """
    phone_of: dict[int, str] = {}
    own: dict[int, str] = {}
    for start in range(0, len(order_ids), _ID_CHUNK):
        ids = order_ids[start : start + _ID_CHUNK]
        found = await conn.execute(
            select(orders.c.id, customers.c.phone)
            .join(customers, customers.c.id == orders.c.customer_id)
            .where(orders.c.id.in_(ids), customers.c.phone.is_not(None))
        )
        phone_of.update((row.id, row.phone) for row in found)
        found = await conn.execute(
            select(choices.c.order_id, choices.c.short_ref).where(
                choices.c.order_id.in_(ids),
                choices.c.state.in_(machine.UNDECIDED),
                choices.c.short_ref.is_not(None),
            )
        )
        own.update((row.order_id, row.short_ref) for row in found)
    phones = sorted(set(phone_of.values()))
    taken: dict[str, set[str]] = defaultdict(set)
    for start in range(0, len(phones), _ID_CHUNK):
        found = await conn.execute(
            select(customers.c.phone, choices.c.short_ref)
            .select_from(
                choices.join(orders, orders.c.id == choices.c.order_id).join(
                    customers, customers.c.id == orders.c.customer_id
                )
            )
            .where(
                customers.c.brand_id == brand_id,
                customers.c.phone.in_(phones[start : start + _ID_CHUNK]),
                choices.c.state.in_(machine.UNDECIDED),
                choices.c.short_ref.is_not(None),
            )
        )
        for row in found:
            taken[row.phone].add(row.short_ref)
    refs: dict[int, str] = {}
    for order_id in order_ids:
        ref = own.get(order_id)
        if ref is None:
            phone = phone_of.get(order_id)
            ref = machine.short_ref(order_id, taken[phone] if phone else ())
            if phone:
                taken[phone].add(ref)
        refs[order_id] = ref
    return refs


async def settle_refs(
    conn: AsyncConnection, current: Mapping[int, str | None], now: dt.datetime
) -> dict[int, str]:
    """Make one phone's open orders' codes distinct (see `unique_refs`); return them all."""
    settled = machine.unique_refs(current)
    for order_id, ref in settled.items():
        if current.get(order_id) != ref:
            await conn.execute(
                update(choices)
                .where(choices.c.order_id == order_id, choices.c.state.in_(machine.UNDECIDED))
                .values(short_ref=ref, updated_at=now)
            )
    return settled


async def decide(
    conn: AsyncConnection,
    brand_id: int,
    order_id: int,
    choice_id: int,
    decision: str,
    alternative: str | None,
    via: str,
    now: dt.datetime,
) -> machine.Outcome:
    """Record the shopper's decision once; a repeat sees the first one."""
    row = (
        await conn.execute(
            select(choices, order_lines.c.ref, order_lines.c.sku, order_lines.c.status)
            .join(order_lines, order_lines.c.id == choices.c.order_line_id)
            .where(
                choices.c.id == choice_id,
                choices.c.order_id == order_id,
                choices.c.brand_id == brand_id,
            )
            .with_for_update(of=choices)
        )
    ).first()
    if row is None:
        raise ChoiceError("no such choice")
    if row.state in machine.UNDECIDED and row.status != "backordered":
        # The line shipped, was served from stock or cancelled meanwhile: nothing to choose.
        raise ChoiceError("this item is no longer waiting")
    outcome = machine.decide(
        row.state,
        row.decision,
        row.alternative_sku,
        decision,
        alternative,
        [a.get("sku") for a in row.alternatives or []],
        row.deadline,
        now,
    )
    if outcome.already_decided:
        return outcome
    await conn.execute(
        update(choices)
        .where(choices.c.id == choice_id)
        .values(
            state=outcome.state,
            decision=outcome.decision,
            alternative_sku=outcome.alternative_sku,
            decided_at=now,
            decided_via=via,
            updated_at=now,
        )
    )
    if outcome.line_status is not None:
        await conn.execute(
            update(order_lines)
            .where(order_lines.c.id == row.order_line_id)
            .values(status=outcome.line_status, updated_at=now)
        )
    bumped = (
        await conn.execute(
            update(orders)
            .where(orders.c.id == order_id)
            .values(version=orders.c.version + 1, updated_at=now)
            .returning(orders.c.version)
        )
    ).scalar_one()
    changes.note(conn, {order_id: bumped})
    await events.record(
        conn,
        brand_id,
        [
            events.NewEvent(
                order_id,
                "choice_made",
                {
                    "choice": choice_id,
                    "line": row.ref,
                    "sku": row.sku,
                    "decision": outcome.decision,
                    "alternative": outcome.alternative_sku,
                    "via": via,
                },
            )
        ],
        now,
    )
    if outcome.line_status is not None:
        await etas.recompute(conn, brand_id, {row.sku}, now)
    return outcome


async def escalate(
    conn: AsyncConnection, brand_id: int, choice_ids: Collection[int], now: dt.datetime
) -> int:
    """Hand open choices to a person; record `choice_needs_person`; return how many moved."""
    rows = (
        await conn.execute(
            select(choices.c.id, choices.c.order_id, order_lines.c.ref, order_lines.c.sku)
            .join(order_lines, order_lines.c.id == choices.c.order_line_id)
            .where(
                choices.c.brand_id == brand_id,
                choices.c.id.in_(sorted(choice_ids)),
                choices.c.state == "open",
            )
            .order_by(choices.c.id)
            .with_for_update(of=choices)
        )
    ).all()
    if not rows:
        return 0
    await conn.execute(
        update(choices)
        .where(choices.c.id.in_([row.id for row in rows]))
        .values(state=machine.escalate("open"), updated_at=now)
    )
    await _bump(conn, {row.order_id for row in rows}, now)
    await events.record(
        conn,
        brand_id,
        [
            events.NewEvent(
                row.order_id,
                "choice_needs_person",
                {"choice": row.id, "line": row.ref, "sku": row.sku},
            )
            for row in rows
        ],
        now,
    )
    return len(rows)


async def apply_deadlines(
    conn: AsyncConnection,
    now: dt.datetime,
    limit: int = 500,
    *,
    only: Collection[int] | None = None,
    told_via: str | None = None,
) -> int:
    """Apply the brand's default to undecided choices past their deadline; return how many.

    Each gets `app.domain.choices.default_outcome` (the line is cancelled for a cancel default),
    its order a new version and a `choice_defaulted` event. A choice whose line stopped waiting
    is closed instead, and so is an older choice on a line whose newer one defaults now (a line
    that went from at risk to expired): the line gets one outcome. On PostgreSQL the rows are
    locked with SKIP LOCKED, so concurrent workers each take different choices and none is
    defaulted twice; SQLite runs one writer at a time. `only` limits the run to these choices
    (a reply that arrives after the deadline settles its own choices first); `told_via` names
    the channel that already tells the shopper (that SMS reply's answer), recorded as the
    event's `via` so the confirmation does not go out there a second time.
    """
    query = (
        select(
            choices.c.id,
            choices.c.brand_id,
            choices.c.order_id,
            choices.c.order_line_id,
            choices.c.state,
            choices.c.deadline,
            choices.c.default_action,
            order_lines.c.ref,
            order_lines.c.sku,
            order_lines.c.status,
        )
        .join(order_lines, order_lines.c.id == choices.c.order_line_id)
        .where(choices.c.state.in_(machine.UNDECIDED), choices.c.deadline < now)
        .order_by(choices.c.deadline, choices.c.id)
        .limit(limit)
        .with_for_update(of=choices, skip_locked=True)
    )
    if only is not None:
        query = query.where(choices.c.id.in_(sorted(only)))
    rows = [
        r for r in (await conn.execute(query)).all() if machine.overdue(r.state, r.deadline, now)
    ]
    if not rows:
        return 0
    newest: dict[int, Any] = {}
    for row in rows:
        if row.order_line_id not in newest or row.id > newest[row.order_line_id].id:
            newest[row.order_line_id] = row
    due = [r for r in newest.values() if r.status == "backordered"]
    closed = [r.id for r in rows if r.status != "backordered" or newest[r.order_line_id] is not r]
    if closed:
        await conn.execute(
            update(choices)
            .where(choices.c.id.in_(sorted(closed)))
            .values(state="closed", updated_at=now)
        )
    outcomes = {row.id: machine.default_outcome(row.default_action) for row in due}
    for decision in machine.DECISIONS:
        ids = sorted(i for i, outcome in outcomes.items() if outcome.decision == decision)
        if ids:
            await conn.execute(
                update(choices)
                .where(choices.c.id.in_(ids))
                .values(
                    state="defaulted",
                    decision=decision,
                    alternative_sku=None,
                    decided_at=now,
                    decided_via="default",
                    updated_at=now,
                )
            )
    ended = sorted(
        (r.order_line_id, outcomes[r.id].line_status) for r in due if outcomes[r.id].line_status
    )
    for line_id, status in ended:
        await conn.execute(
            update(order_lines)
            .where(order_lines.c.id == line_id)
            .values(status=status, updated_at=now)
        )
    await _bump(conn, {r.order_id for r in rows}, now)
    by_brand: dict[int, list[Any]] = defaultdict(list)
    for row in sorted(due, key=lambda r: r.id):
        by_brand[row.brand_id].append(row)
    for brand_id, brand_rows in by_brand.items():
        await events.record(
            conn,
            brand_id,
            [
                events.NewEvent(
                    row.order_id,
                    "choice_defaulted",
                    {
                        "choice": row.id,
                        "line": row.ref,
                        "sku": row.sku,
                        "decision": outcomes[row.id].decision,
                        "default_action": row.default_action,
                        **({"via": told_via} if told_via else {}),
                    },
                )
                for row in brand_rows
            ],
            now,
        )
        # A cancelled line leaves its queue: the lines behind it move up.
        freed = {row.sku for row in brand_rows if outcomes[row.id].line_status is not None}
        if freed:
            await etas.recompute(conn, brand_id, freed, now)
    return len(due)


async def _bump(conn: AsyncConnection, order_ids: Collection[int], now: dt.datetime) -> None:
    """Give each order a new version (in id order, so concurrent writers lock alike)."""
    versions: dict[int, int] = {}
    for order_id in sorted(order_ids):
        versions[order_id] = (
            await conn.execute(
                update(orders)
                .where(orders.c.id == order_id)
                .values(version=orders.c.version + 1, updated_at=now)
                .returning(orders.c.version)
            )
        ).scalar_one()
    changes.note(conn, versions)
