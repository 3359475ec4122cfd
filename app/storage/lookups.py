"""Rate limits for the order lookup form, shared by every process through the database."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.dialect import insert_ignore
from app.storage.schema import lookup_attempts

WINDOW = dt.timedelta(minutes=10)
PER_CLIENT = 20
PER_ORDER = 5


def _key(kind: str, *parts: object) -> str:
    # Hashed: the table must not become a log of addresses and order numbers.
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]
    return f"{kind}:{digest}"


async def _spend(conn: AsyncConnection, key: str, limit: int, now: dt.datetime) -> int | None:
    """Count one attempt; return seconds to wait when over the limit."""
    await conn.execute(
        insert_ignore(conn, lookup_attempts, ["key"]).values(key=key, window_start=now, attempts=0)
    )
    row = (
        await conn.execute(
            select(lookup_attempts.c.window_start, lookup_attempts.c.attempts)
            .where(lookup_attempts.c.key == key)
            .with_for_update()
        )
    ).one()
    start, attempts = row.window_start, row.attempts
    if now - start >= WINDOW:
        start, attempts = now, 0
    if attempts >= limit:
        return max(1, int((start + WINDOW - now).total_seconds()) + 1)
    await conn.execute(
        update(lookup_attempts)
        .where(lookup_attempts.c.key == key)
        .values(window_start=start, attempts=attempts + 1)
    )
    return None


async def allow(
    conn: AsyncConnection, brand_id: int, client: str, number: str, now: dt.datetime
) -> int | None:
    """Spend one lookup for this client and this order number; seconds to wait if refused."""
    waits = [
        await _spend(conn, _key("client", client), PER_CLIENT, now),
        await _spend(conn, _key("order", brand_id, number.casefold()), PER_ORDER, now),
    ]
    refused = [w for w in waits if w is not None]
    return max(refused) if refused else None
