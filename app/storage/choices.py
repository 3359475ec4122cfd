"""Choices as stored: offered by the ETA engine, decided from the page (and later by SMS)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import choices as machine
from app.domain.choices import ChoiceError
from app.storage import changes, etas, events
from app.storage.dialect import insert_ignore
from app.storage.schema import choices, order_lines, orders, skus

__all__ = ["ChoiceError", "Offer", "decide", "offer"]


@dataclass(frozen=True)
class Offer:
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
    """
    if not offers:
        return set()
    names = sorted({o.sku for o in offers})
    alternatives = {
        row.sku: row.alternatives or []
        for row in await conn.execute(
            select(skus.c.sku, skus.c.alternatives).where(
                skus.c.brand_id == brand_id, skus.c.sku.in_(names)
            )
        )
    }
    opened = await conn.execute(
        insert_ignore(conn, choices, ["order_line_id", "reason"]).returning(
            choices.c.order_line_id, choices.c.reason
        ),
        [
            {
                "brand_id": brand_id,
                "order_id": o.order_id,
                "order_line_id": o.line_id,
                "reason": o.reason,
                "state": "open",
                "alternatives": alternatives.get(o.sku, []),
                "deadline": deadline,
                "default_action": default_action,
                "created_at": now,
                "updated_at": now,
            }
            for o in offers
        ],
    )
    return {(row.order_line_id, row.reason) for row in opened}


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
