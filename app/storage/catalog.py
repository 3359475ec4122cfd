"""SKUs (stock and supply attributes) and their inbound supply."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.models import SkuIn, SupplyIn
from app.api.problems import Conflict, NotFound
from app.storage import events
from app.storage.dialect import upsert
from app.storage.schema import inbound_supply, skus

SKU_FIELDS = ("title", "on_hand", "production_lead_days", "release_date", "season_start")
SUPPLY_FIELDS = ("ref", "kind", "quantity", "received_quantity", "expected_date", "confidence")


async def put_sku(
    conn: AsyncConnection, brand_id: int, sku: str, body: SkuIn, now: dt.datetime
) -> tuple[dict[str, Any], bool]:
    """Create or replace a SKU's stock and attributes; return it and whether it is new."""
    before = await _find(conn, brand_id, sku)
    values = {name: getattr(body, name) for name in SKU_FIELDS}
    await conn.execute(
        upsert(conn, skus, ["brand_id", "sku"], [*SKU_FIELDS, "updated_at"]).values(
            brand_id=brand_id, sku=sku, created_at=now, updated_at=now, **values
        )
    )
    if before is None or any(before[name] != values[name] for name in SKU_FIELDS):
        await events.record(
            conn,
            brand_id,
            [events.NewEvent(None, "stock_set", {"sku": sku, "on_hand": body.on_hand})],
            now,
        )
    return {"sku": sku, **values}, before is None


async def _find(conn: AsyncConnection, brand_id: int, sku: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(select(skus).where(skus.c.brand_id == brand_id, skus.c.sku == sku))
    ).first()
    return dict(row._mapping) if row else None


async def get_sku(conn: AsyncConnection, brand_id: int, sku: str) -> dict[str, Any]:
    """Return a SKU's stored values or raise 404 (also for another brand's SKU)."""
    row = await _find(conn, brand_id, sku)
    if row is None:
        raise NotFound(f"No SKU {sku!r}; create it with PUT first.", code="unknown-sku")
    return row


async def add_supply(
    conn: AsyncConnection, brand_id: int, sku: str, body: SupplyIn, now: dt.datetime
) -> dict[str, Any]:
    """Record an inbound purchase order or production run for a SKU."""
    row = await get_sku(conn, brand_id, sku)
    exists = (
        await conn.execute(
            select(inbound_supply.c.id).where(
                inbound_supply.c.sku_id == row["id"], inbound_supply.c.ref == body.ref
            )
        )
    ).first()
    if exists:
        raise Conflict(f"SKU {sku!r} already has inbound supply {body.ref!r}.")
    values = {
        "ref": body.ref,
        "kind": body.kind,
        "quantity": body.quantity,
        "received_quantity": 0,
        "expected_date": body.expected_date,
        "confidence": body.confidence,
    }
    await conn.execute(
        inbound_supply.insert().values(
            brand_id=brand_id, sku_id=row["id"], created_at=now, updated_at=now, **values
        )
    )
    await events.record(
        conn,
        brand_id,
        [
            events.NewEvent(
                None,
                "supply_added",
                {
                    "sku": sku,
                    "ref": body.ref,
                    "quantity": body.quantity,
                    "expected_date": body.expected_date.isoformat(),
                },
            )
        ],
        now,
    )
    return {"sku": sku, **values}


async def list_supply(conn: AsyncConnection, brand_id: int, sku: str) -> list[dict[str, Any]]:
    """List a SKU's inbound supply, soonest first."""
    row = await get_sku(conn, brand_id, sku)
    rows = (
        await conn.execute(
            select(*(inbound_supply.c[name] for name in SUPPLY_FIELDS))
            .where(inbound_supply.c.sku_id == row["id"])
            .order_by(inbound_supply.c.expected_date, inbound_supply.c.ref)
        )
    ).all()
    return [{"sku": sku, **r._mapping} for r in rows]


async def remove_supply(
    conn: AsyncConnection, brand_id: int, sku: str, ref: str, now: dt.datetime
) -> None:
    """Delete an inbound supply row (a cancelled purchase order)."""
    row = await get_sku(conn, brand_id, sku)
    result = await conn.execute(
        delete(inbound_supply).where(
            inbound_supply.c.sku_id == row["id"], inbound_supply.c.ref == ref
        )
    )
    if not result.rowcount:
        raise NotFound(f"SKU {sku!r} has no inbound supply {ref!r}.")
    await events.record(
        conn, brand_id, [events.NewEvent(None, "supply_removed", {"sku": sku, "ref": ref})], now
    )
