"""The domain event log: what changed, when, for which order.

Readers page through a brand's events with an opaque cursor over (txid, id). On PostgreSQL,
ids come from a sequence and transactions commit in any order, so an id-only cursor could
skip an event committed late with a lower id. Each row carries its writing transaction's id,
and a reader first finds the horizon: the oldest transaction still writing in this database
(from pg_stat_activity), or the next transaction id when none is. Every transaction below the
horizon has finished, so its events are all visible to the next statement; events at or above
it wait. Ordering by (txid, id) then never skips one. An open transaction delays the feed (never
loses from it) until it ends; transactions in other databases of the server do not. SQLite
serialises writers, so txid stays 0 and the id alone orders events.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.schema import events, orders
from messaging import outbox


@dataclass(frozen=True)
class NewEvent:
    order_id: int | None
    type: str
    data: dict[str, Any]


async def record(
    conn: AsyncConnection, brand_id: int, new: Iterable[NewEvent], now: dt.datetime
) -> None:
    """Append events in the caller's transaction."""
    new = list(new)
    rows = [
        {
            "brand_id": brand_id,
            "order_id": e.order_id,
            "type": e.type,
            "data": e.data,
            "created_at": now,
        }
        for e in new
    ]
    if rows:
        await conn.execute(events.insert(), rows)
        # News for the shopper and the brand's webhooks go into the outbox in this transaction.
        await outbox.plan(conn, brand_id, [(e.order_id, e.type, e.data) for e in new], now)


class BadCursor(ValueError):
    """The cursor was not one this service handed out."""


def encode_cursor(txid: int, event_id: int) -> str:
    """Make the opaque cursor for a position in the log."""
    return base64.urlsafe_b64encode(f"{txid}.{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """Read a cursor back; raise BadCursor for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        txid_text, _, id_text = base64.urlsafe_b64decode(padded.encode()).decode().partition(".")
        txid, event_id = int(txid_text), int(id_text)
    except (ValueError, UnicodeDecodeError):
        raise BadCursor(cursor) from None
    if txid < 0 or event_id < 0:
        raise BadCursor(cursor)
    return txid, event_id


# pg_stat_activity gives 32-bit xids; stored txids are 64-bit (epoch and xid), so each running
# xid is widened with the epoch of the snapshot's xmax (one epoch back if it wrapped since).
_HORIZON = text(
    """
    WITH snap AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
    running AS (
        SELECT backend_xid::text::bigint AS xid FROM pg_stat_activity
        WHERE datname = current_database() AND backend_xid IS NOT NULL
    )
    SELECT LEAST(
        snap.xmax,
        MIN(
            (snap.xmax >> 32 << 32) + running.xid
            - CASE WHEN running.xid > (snap.xmax & 4294967295) THEN 4294967296 ELSE 0 END
        )
    )
    FROM snap LEFT JOIN running ON true
    GROUP BY snap.xmax
    """
)


@dataclass(frozen=True)
class EventRow:
    id: int
    txid: int
    type: str
    order_number: str | None
    created_at: dt.datetime
    data: dict[str, Any]


async def read_page(
    conn: AsyncConnection, brand_id: int, after: tuple[int, int], limit: int
) -> list[EventRow]:
    """Return up to `limit` of the brand's events after the cursor position, oldest first."""
    txid, event_id = after
    stmt = (
        select(
            events.c.id,
            events.c.txid,
            events.c.type,
            events.c.created_at,
            events.c.data,
            orders.c.number,
        )
        .outerjoin(orders, orders.c.id == events.c.order_id)
        .where(
            events.c.brand_id == brand_id,
            or_(events.c.txid > txid, and_(events.c.txid == txid, events.c.id > event_id)),
        )
        .order_by(events.c.txid, events.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        horizon = (await conn.execute(_HORIZON)).scalar_one()
        stmt = stmt.where(events.c.txid < horizon)
    rows = (await conn.execute(stmt)).all()
    return [EventRow(r.id, r.txid, r.type, r.number, r.created_at, r.data) for r in rows]
