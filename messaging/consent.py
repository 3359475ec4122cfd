"""Who may be written to: SMS consent, opt-outs, bounces and unsubscribes, per brand.

An address is suppressed for a topic when a row says so for that topic or for "all". SMS
opt-outs (STOP and its siblings) are per brand and number; START lifts them. Email bounces,
drops and spam reports suppress an address for everything; an unsubscribe from optional mail
suppresses its topic only ("eta_updates").
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.dialect import insert_ignore
from app.storage.schema import suppressions

ALL = "all"


async def is_suppressed(
    conn: AsyncConnection, brand_id: int, channel: str, address: str, topic: str = ALL
) -> str | None:
    """Return why the address must not get this topic, or None when it may."""
    row = (
        await conn.execute(
            select(suppressions.c.reason)
            .where(
                suppressions.c.brand_id == brand_id,
                suppressions.c.channel == channel,
                suppressions.c.address == address,
                suppressions.c.topic.in_({ALL, topic}),
            )
            .limit(1)
        )
    ).first()
    return None if row is None else str(row.reason)


async def suppress(
    conn: AsyncConnection,
    brand_id: int,
    channel: str,
    address: str,
    reason: str,
    now: dt.datetime,
    topic: str = ALL,
) -> None:
    """Record that the address must not get the topic (again); a repeat changes nothing."""
    stmt = insert_ignore(conn, suppressions, ["brand_id", "channel", "address", "topic"])
    await conn.execute(
        stmt.values(
            brand_id=brand_id,
            channel=channel,
            address=address,
            topic=topic,
            reason=reason,
            created_at=now,
        )
    )


async def lift(
    conn: AsyncConnection, brand_id: int, channel: str, address: str, topic: str = ALL
) -> bool:
    """Lift a suppression (START after STOP); return whether there was one."""
    result = await conn.execute(
        delete(suppressions).where(
            suppressions.c.brand_id == brand_id,
            suppressions.c.channel == channel,
            suppressions.c.address == address,
            suppressions.c.topic == topic,
        )
    )
    return bool(result.rowcount)
