"""Late parcels: tell the shopper and the brand when a parcel misses its date or stops moving.

Carriers report a delay themselves only sometimes (a new ETA past the promised date is news
when it arrives, see messaging.outbox). The rest is found by the clock: a sweep the workers run
every few minutes finds parcels not yet delivered whose last date (promised, or the carrier's)
has passed in the brand's timezone, and parcels on their way with no carrier scan for the
brand's `stall_after_days`, either within the last LATE_NEWS_WINDOW (a week: older is stale data,
not news). Each becomes a `shipment_late` event, which is `shipment_delayed`
news for the shopper and a `shipment.late` webhook for the brand, told once: the parcel keeps
what was told (`late_for`, `late_told_at`; a carrier's later date sets `late_told_at` too, in
messaging.outbox), see `app.domain.parcels.lateness`.

On PostgreSQL the parcels are locked with SKIP LOCKED, so workers sweeping at once take
different parcels; the news key would drop a repeat for the shopper anyway, the lock keeps the
brand's webhook from going out twice.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.parcels import LATE_NEWS_WINDOW, MOVING, UNDELIVERED, lateness
from app.storage import events
from app.storage.schema import brands, checkpoints, shipments

# Parcels told per transaction: on SQLite a write holds every other writer back meanwhile (a
# parcel told costs about half a millisecond, see BENCHMARKS.md).
BATCH = 200

_MOVED = (
    select(func.max(checkpoints.c.occurred_at))
    .where(checkpoints.c.shipment_id == shipments.c.id)
    .scalar_subquery()
)
# The newest scan, else when it shipped, else when it was added to the order.
_LAST_MOVE = func.coalesce(_MOVED, shipments.c.shipped_at, shipments.c.created_at)
# The last date the shopper was given: the later of the promised date and the carrier's.
_DUE = case(
    (shipments.c.carrier_eta.is_(None), shipments.c.promised_date),
    (shipments.c.promised_date.is_(None), shipments.c.carrier_eta),
    (shipments.c.carrier_eta > shipments.c.promised_date, shipments.c.carrier_eta),
    else_=shipments.c.promised_date,
)


async def tell_late_parcels(conn: AsyncConnection, now: dt.datetime, limit: int = BATCH) -> int:
    """Record a `shipment_late` event for up to `limit` late parcels; return how many.

    Call it again while it returns `limit`: each call is meant to be one short transaction.
    The queries select exactly what the rule tells, so a short count means none is left.
    """
    told = 0
    for brand in (
        await conn.execute(
            select(brands.c.id, brands.c.timezone, brands.c.stall_after_days).order_by(brands.c.id)
        )
    ).all():
        told += await _tell_brand(conn, brand, now, limit - told)
        if told >= limit:
            break
    return told


async def _tell_brand(conn: AsyncConnection, brand: Any, now: dt.datetime, limit: int) -> int:
    today = now.astimezone(zoneinfo.ZoneInfo(brand.timezone)).date()
    stall_after = dt.timedelta(days=brand.stall_after_days)
    last_move = _LAST_MOVE.label("last_move")
    overdue = and_(
        shipments.c.status.in_(sorted(UNDELIVERED)),
        _DUE.between(today - LATE_NEWS_WINDOW, today - dt.timedelta(days=1)),
        or_(shipments.c.late_for.is_(None), shipments.c.late_for != _DUE),
    )
    stalled = and_(
        shipments.c.status.in_(sorted(MOVING)),
        _LAST_MOVE.between(now - stall_after - LATE_NEWS_WINDOW, now - stall_after),
        or_(shipments.c.late_told_at.is_(None), shipments.c.late_told_at < _LAST_MOVE),
    )
    rows = (
        await conn.execute(
            select(
                shipments.c.id,
                shipments.c.order_id,
                shipments.c.ref,
                shipments.c.carrier,
                shipments.c.tracking_number,
                shipments.c.status,
                shipments.c.promised_date,
                shipments.c.carrier_eta,
                shipments.c.late_for,
                shipments.c.late_told_at,
                last_move,
            )
            .where(shipments.c.brand_id == brand.id, or_(overdue, stalled))
            .order_by(shipments.c.id)
            .limit(limit)
            .with_for_update(of=shipments, skip_locked=True)
        )
    ).all()
    new = []
    marks: list[dict[str, Any]] = []
    for row in rows:
        late = lateness(
            status=row.status,
            promised=row.promised_date,
            carrier_eta=row.carrier_eta,
            last_move=row.last_move,
            late_for=row.late_for,
            late_told_at=row.late_told_at,
            today=today,
            now=now,
            stall_after=stall_after,
        )
        if late is None:  # the query and the rule agree; this is the rule's last word
            continue
        marks.append({"parcel": row.id, "late_for": late.late_for})
        new.append(
            events.NewEvent(
                row.order_id,
                "shipment_late",
                {
                    "shipment": row.ref,
                    "reason": late.reason,
                    "due": late.due.isoformat() if late.due else None,
                    # A stalled parcel's dates still ahead: the news says the carrier's, if any.
                    "promised_date": _iso(row.promised_date),
                    "carrier_eta": _iso(row.carrier_eta),
                    "last_scan_at": row.last_move.isoformat(),
                    "status": row.status,
                    "carrier": row.carrier,
                    "tracking_number": row.tracking_number,
                },
            )
        )
    if marks:
        await conn.execute(
            update(shipments)
            .where(shipments.c.id == bindparam("parcel"))
            .values(late_for=bindparam("late_for"), late_told_at=now, updated_at=now),
            marks,
        )
    await events.record(conn, brand.id, new, now)
    return len(new)


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None
