"""SKUs (stock and supply attributes) and their inbound supply."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.models import ReceiveIn, SkuIn, SkuPatch, SupplyIn, SupplyPatch
from app.api.problems import Conflict, NotFound, Problem
from app.storage import etas, events
from app.storage.dialect import upsert
from app.storage.schema import inbound_supply, skus

SKU_FIELDS = (
    "title",
    "on_hand",
    "production_lead_days",
    "release_date",
    "season_start",
    "alternatives",
)
SUPPLY_FIELDS = ("ref", "kind", "quantity", "received_quantity", "expected_date", "confidence")


def _sku_values(body: SkuIn | SkuPatch, fields: Iterable[str]) -> dict[str, Any]:
    values = {name: getattr(body, name) for name in fields}
    if values.get("alternatives") is not None:
        values["alternatives"] = [a.model_dump(mode="json") for a in values["alternatives"]]
    return values


async def put_sku(
    conn: AsyncConnection, brand_id: int, sku: str, body: SkuIn, now: dt.datetime
) -> tuple[dict[str, Any], bool]:
    """Create or replace a SKU's stock and attributes; return it and whether it is new."""
    before = await _find(conn, brand_id, sku)
    return await _write_sku(conn, brand_id, sku, before, _sku_values(body, SKU_FIELDS), now)


async def patch_sku(
    conn: AsyncConnection, brand_id: int, sku: str, body: SkuPatch, now: dt.datetime
) -> dict[str, Any]:
    """Change some of a SKU's attributes (stock, lead time, dates, alternatives)."""
    before = await get_sku(conn, brand_id, sku)
    values = {name: before[name] for name in SKU_FIELDS}
    values.update(_sku_values(body, body.model_fields_set))
    row, _ = await _write_sku(conn, brand_id, sku, before, values, now)
    return row


async def _write_sku(
    conn: AsyncConnection,
    brand_id: int,
    sku: str,
    before: dict[str, Any] | None,
    values: dict[str, Any],
    now: dt.datetime,
) -> tuple[dict[str, Any], bool]:
    await conn.execute(
        upsert(conn, skus, ["brand_id", "sku"], [*SKU_FIELDS, "updated_at"]).values(
            brand_id=brand_id, sku=sku, created_at=now, updated_at=now, **values
        )
    )
    if before is None or any(before[name] != values[name] for name in SKU_FIELDS):
        await events.record(
            conn,
            brand_id,
            [events.NewEvent(None, "stock_set", {"sku": sku, "on_hand": values["on_hand"]})],
            now,
        )
        await etas.recompute(conn, brand_id, {sku}, now)
    # Serving waiting lines may have taken some of the stock just set.
    return await get_sku(conn, brand_id, sku), before is None


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
    await etas.recompute(conn, brand_id, {sku}, now)
    return {"sku": sku, **values}


async def _supply_row(
    conn: AsyncConnection, brand_id: int, sku: str, ref: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    row = await get_sku(conn, brand_id, sku)
    supply = (
        await conn.execute(
            select(inbound_supply).where(
                inbound_supply.c.sku_id == row["id"], inbound_supply.c.ref == ref
            )
        )
    ).first()
    if supply is None:
        raise NotFound(f"SKU {sku!r} has no inbound supply {ref!r}.")
    return row, dict(supply._mapping)


def _supply_out(sku: str, supply: dict[str, Any]) -> dict[str, Any]:
    return {"sku": sku, **{name: supply[name] for name in SUPPLY_FIELDS}}


async def change_supply(
    conn: AsyncConnection, brand_id: int, sku: str, ref: str, body: SupplyPatch, now: dt.datetime
) -> dict[str, Any]:
    """Move an inbound row's date, quantity, confidence or kind."""
    _, supply = await _supply_row(conn, brand_id, sku, ref)
    changes = {
        name: getattr(body, name)
        for name in body.model_fields_set
        if getattr(body, name) != supply[name]
    }
    if "quantity" in changes and changes["quantity"] < supply["received_quantity"]:
        raise Problem(
            f"{supply['received_quantity']} units of {ref!r} were already received.",
            code="quantity-exceeded",
            status=409,
            errors=[{"path": "quantity", "message": "less than already received"}],
        )
    if not changes:
        return _supply_out(sku, supply)
    await conn.execute(
        update(inbound_supply)
        .where(inbound_supply.c.id == supply["id"])
        .values(**changes, updated_at=now)
    )
    before = {name: _plain(supply[name]) for name in changes}
    after = {name: _plain(value) for name, value in changes.items()}
    await events.record(
        conn,
        brand_id,
        [
            events.NewEvent(
                None, "supply_changed", {"sku": sku, "ref": ref, "old": before, "new": after}
            )
        ],
        now,
    )
    await etas.recompute(conn, brand_id, {sku}, now)
    return _supply_out(sku, {**supply, **changes})


async def receive_supply(
    conn: AsyncConnection, brand_id: int, sku: str, ref: str, body: ReceiveIn, now: dt.datetime
) -> dict[str, Any]:
    """Take delivery of units of an inbound row: they go on hand and serve the queue first."""
    row, supply = await _supply_row(conn, brand_id, sku, ref)
    expected = supply["quantity"] - supply["received_quantity"]
    if body.quantity > expected:
        raise Problem(
            f"Only {expected} units of {ref!r} are still expected.",
            code="quantity-exceeded",
            status=409,
            errors=[{"path": "quantity", "message": f"at most {expected}"}],
        )
    received = supply["received_quantity"] + body.quantity
    await conn.execute(
        update(inbound_supply)
        .where(inbound_supply.c.id == supply["id"])
        .values(received_quantity=received, updated_at=now)
    )
    await conn.execute(
        update(skus)
        .where(skus.c.id == row["id"])
        .values(on_hand=skus.c.on_hand + body.quantity, updated_at=now)
    )
    await events.record(
        conn,
        brand_id,
        [
            events.NewEvent(
                None, "stock_received", {"sku": sku, "ref": ref, "quantity": body.quantity}
            )
        ],
        now,
    )
    await etas.recompute(conn, brand_id, {sku}, now)
    return _supply_out(sku, {**supply, "received_quantity": received})


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


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
    await etas.recompute(conn, brand_id, {sku}, now)
