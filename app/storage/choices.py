"""Choices as stored: offered by the ETA engine, decided from the page (and later by SMS)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import choices as machine
from app.domain.choices import ChoiceError
from app.storage import changes, etas, events
from app.storage.dialect import bind_processor
from app.storage.schema import choices, order_lines, orders, skus

__all__ = ["ChoiceError", "Offer", "decide", "offer"]


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
    stamp = bind_processor(conn, choices.c.created_at)
    fixed = (brand_id, stamp(deadline), default_action, stamp(now))
    opened: set[tuple[int, str]] = set()
    chunk = _OFFER_CHUNK_PG if conn.dialect.name == "postgresql" else _OFFER_CHUNK_SQLITE
    for start in range(0, len(offers), chunk):
        rows = [
            (o.order_id, o.line_id, o.reason, alternatives.get(o.sku, none))
            for o in offers[start : start + chunk]
        ]
        if conn.dialect.name == "postgresql":
            sql, params = _OFFER_PG, (*fixed, *(list(c) for c in zip(*rows, strict=True)))
        else:
            values = ", ".join(["(?, ?, ?, ?, ?, 'open', ?, ?, ?, ?)"] * len(rows))
            sql = _OFFER_SQLITE.format(values=values)
            brand, due, action, created = fixed
            params = tuple(
                value
                for order_id, line_id, reason, alts in rows
                for value in (brand, order_id, line_id, reason, alts, due, action, created, created)
            )
        result: Iterable[Sequence[Any]] = await conn.exec_driver_sql(sql, params)
        opened.update((row[0], row[1]) for row in result)
    return opened


_SKU_CHUNK = 5_000  # names per IN list
_OFFER_CHUNK_SQLITE = 2_000  # 9 values a row: within SQLite's 32,766 parameters per statement
_OFFER_CHUNK_PG = 50_000  # four arrays, whatever their length
_OFFER_COLUMNS = (
    "brand_id, order_id, order_line_id, reason, alternatives, state,"
    " deadline, default_action, created_at, updated_at"
)
_OFFER_SQLITE = (
    f"INSERT INTO choices ({_OFFER_COLUMNS}) VALUES {{values}}"  # noqa: S608
    " ON CONFLICT (order_line_id, reason) DO NOTHING RETURNING order_line_id, reason"
)
_OFFER_PG = (
    f"INSERT INTO choices ({_OFFER_COLUMNS})"  # noqa: S608
    " SELECT $1, v.order_id, v.line_id, v.reason, v.alternatives::jsonb, 'open', $2, $3, $4, $4"
    " FROM unnest($5::bigint[], $6::bigint[], $7::text[], $8::text[])"
    " AS v(order_id, line_id, reason, alternatives)"
    " ON CONFLICT (order_line_id, reason) DO NOTHING RETURNING order_line_id, reason"
)


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
    if row.state == "open" and row.status != "backordered":
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
