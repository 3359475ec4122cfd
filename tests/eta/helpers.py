"""What the ETA tests share: API shortcuts, event and ETA-column reads."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.storage import etas, schema
from app.storage.database import Database
from tests.api.helpers import API
from tests.conftest import BrandKey

PLACED = "2026-11-01T10:00:00Z"  # window end (30 days): 2026-12-01
CUSTOMER = {"email": "ada@example.com"}


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def backordered(ref: str, sku: str, quantity: int = 1, kind: str = "standard") -> dict[str, Any]:
    """Return a backordered line payload of a backorder type."""
    return {
        "ref": ref,
        "sku": sku,
        "title": f"Item {sku}",
        "quantity": quantity,
        "unit_price": 1000,
        "status": "backordered",
        "backorder_type": kind,
    }


def in_stock(ref: str, sku: str, quantity: int = 1) -> dict[str, Any]:
    return {"ref": ref, "sku": sku, "title": f"Item {sku}", "quantity": quantity, "unit_price": 500}


def order_body(
    number: str, lines: list[dict[str, Any]], placed_at: str = PLACED, **extra: Any
) -> dict[str, Any]:
    return {
        "number": number,
        "placed_at": placed_at,
        "currency": "USD",
        "customer": CUSTOMER,
        "lines": lines,
        **extra,
    }


def delivery(earliest: str, latest: str) -> dict[str, str]:
    return {"earliest": earliest, "latest": latest}


class Api:
    """Shortcuts for one brand's calls; each asserts the expected status."""

    def __init__(self, client: httpx.AsyncClient, brand: BrandKey) -> None:
        self.client = client
        self.brand = brand

    async def call(
        self, method: str, path: str, json: Any = None, status: int | None = 200
    ) -> httpx.Response:
        response = await self.client.request(
            method, f"{API}{path}", json=json, headers=self.brand.headers
        )
        if status is not None:
            assert response.status_code == status, response.text
        return response

    async def sku(self, sku: str, on_hand: int = 0, **attrs: Any) -> dict[str, Any]:
        response = await self.call("PUT", f"/skus/{sku}", {"on_hand": on_hand, **attrs}, None)
        assert response.status_code in (200, 201), response.text
        return response.json()  # type: ignore[no-any-return]

    async def supply(
        self, sku: str, ref: str, quantity: int, expected: str, **extra: Any
    ) -> dict[str, Any]:
        body = {"ref": ref, "quantity": quantity, "expected_date": expected, **extra}
        return (await self.call("POST", f"/skus/{sku}/supply", body, 201)).json()  # type: ignore[no-any-return]

    async def move(self, sku: str, ref: str, **patch: Any) -> dict[str, Any]:
        return (await self.call("PATCH", f"/skus/{sku}/supply/{ref}", patch)).json()  # type: ignore[no-any-return]

    async def receive(self, sku: str, ref: str, quantity: int) -> dict[str, Any]:
        path = f"/skus/{sku}/supply/{ref}/receive"
        return (await self.call("POST", path, {"quantity": quantity})).json()  # type: ignore[no-any-return]

    async def place(
        self, number: str, lines: list[dict[str, Any]], placed_at: str = PLACED, **extra: Any
    ) -> dict[str, Any]:
        body = order_body(number, lines, placed_at, **extra)
        response = await self.call("POST", "/orders", body, None)
        assert response.status_code in (200, 201), response.text
        return response.json()  # type: ignore[no-any-return]

    async def order(self, number: str) -> dict[str, Any]:
        return (await self.call("GET", f"/orders/{number}")).json()  # type: ignore[no-any-return]

    async def patch_brand(self, **changes: Any) -> dict[str, Any]:
        return (await self.call("PATCH", "/brand", changes)).json()  # type: ignore[no-any-return]


def line_of(order: dict[str, Any], ref: str) -> dict[str, Any]:
    return next(line for line in order["lines"] if line["ref"] == ref)


def eta_of(order: dict[str, Any], ref: str) -> dict[str, Any] | None:
    return line_of(order, ref)["eta"]  # type: ignore[no-any-return]


def dated(
    ship_by: str,
    earliest: str,
    latest: str,
    *,
    available_from: str,
    reason: str,
    supply_ref: str | None,
    queue: str = "stock",
    position: int = 1,
    window: str = "on_track",
    group: str | None = None,
) -> dict[str, Any]:
    """Return the `eta` object a dated waiting line should show."""
    return {
        "queue": queue,
        "queue_position": position,
        "available_from": available_from,
        "ship_by": ship_by,
        "delivery": delivery(earliest, latest),
        "reason": reason,
        "supply_ref": supply_ref,
        "window_state": window,
        "group": group,
    }


def undated(
    reason: str, *, queue: str = "stock", position: int = 1, group: str | None = "undated"
) -> dict[str, Any]:
    return {
        "queue": queue,
        "queue_position": position,
        "available_from": None,
        "ship_by": None,
        "delivery": None,
        "reason": reason,
        "supply_ref": None,
        "window_state": "no_date",
        "group": group,
    }


async def line_ids(db: Database, brand_id: int, number: str) -> dict[str, int]:
    """Return {line ref: line id} of one order."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(schema.order_lines.c.ref, schema.order_lines.c.id)
            .join(schema.orders, schema.orders.c.id == schema.order_lines.c.order_id)
            .where(schema.orders.c.brand_id == brand_id, schema.orders.c.number == number)
        )
        return {r.ref: r.id for r in rows}


async def last_event_id(db: Database) -> int:
    async with db.read() as conn:
        found = (
            await conn.execute(select(schema.events.c.id).order_by(schema.events.c.id.desc()))
        ).first()
    return int(found.id) if found else 0


async def events_after(db: Database, brand_id: int, after: int) -> list[dict[str, Any]]:
    """Return the brand's events after an id as {type, order, data}, in id order."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(schema.events.c.type, schema.orders.c.number, schema.events.c.data)
            .select_from(schema.events)
            .outerjoin(schema.orders, schema.orders.c.id == schema.events.c.order_id)
            .where(schema.events.c.brand_id == brand_id, schema.events.c.id > after)
            .order_by(schema.events.c.id)
        )
        return [{"type": r.type, "order": r.number, "data": r.data} for r in rows]


def by_order(events: list[dict[str, Any]], kind: str) -> dict[str | None, dict[str, Any]]:
    """Index events of one type by order number, checking there is one per order."""
    found = [e for e in events if e["type"] == kind]
    index = {e["order"]: e["data"] for e in found}
    assert len(index) == len(found), f"several {kind} events for one order: {found}"
    return index


async def versions(db: Database, brand_id: int) -> dict[str, int]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(schema.orders.c.number, schema.orders.c.version).where(
                schema.orders.c.brand_id == brand_id
            )
        )
        return {r.number: r.version for r in rows}


async def on_hand(db: Database, brand_id: int, sku: str) -> int:
    async with db.read() as conn:
        return int(
            (
                await conn.execute(
                    select(schema.skus.c.on_hand).where(
                        schema.skus.c.brand_id == brand_id, schema.skus.c.sku == sku
                    )
                )
            ).scalar_one()
        )


LINE_STATE = ("status", *etas.ETA_FIELDS, *etas.ANNOUNCED_FIELDS)


async def eta_columns(db: Database, brand_id: int) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Read every line's status and stored ETA columns, keyed by (order number, line ref)."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(
                schema.orders.c.number,
                schema.order_lines.c.ref,
                *(schema.order_lines.c[name] for name in LINE_STATE),
            )
            .join(schema.orders, schema.orders.c.id == schema.order_lines.c.order_id)
            .where(schema.order_lines.c.brand_id == brand_id)
        )
        return {(r.number, r.ref): tuple(r[2:]) for r in rows}


async def engine_state(db: Database, brand_id: int) -> dict[str, Any]:
    """Everything a recompute may write: line ETAs, versions, on-hand stock, event count."""
    async with db.read() as conn:
        stock = {
            r.sku: r.on_hand
            for r in await conn.execute(
                select(schema.skus.c.sku, schema.skus.c.on_hand).where(
                    schema.skus.c.brand_id == brand_id
                )
            )
        }
    return {
        "lines": await eta_columns(db, brand_id),
        "versions": await versions(db, brand_id),
        "stock": stock,
        "events": len(await events_after(db, brand_id, 0)),
    }


# Tests whose storage paths other tests already run on both backends: SQLite only, for speed.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
