"""What the API tests share: payload builders, problem+json checks and database snapshots."""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

import anyio
import httpx
from sqlalchemy import Table, func, select

from app.storage import schema
from app.storage.database import Database
from tests.factories import order_payload, shipment_payload

API = "/api/v1"
PUBLIC_URL = "https://track.example.test"
PROBLEM_JSON = "application/problem+json"
# A tracking link: the configured public address, /t/, then >= 128 random bits (22 urlsafe chars).
TRACKING_URL = re.compile(r"^" + re.escape(PUBLIC_URL) + r"/t/([A-Za-z0-9_-]{22,})$")

# Every table an API write may touch (api_keys is left out: authenticating records last use).
DATA_TABLES: tuple[Table, ...] = (
    schema.customers,
    schema.orders,
    schema.order_lines,
    schema.shipments,
    schema.shipment_lines,
    schema.checkpoints,
    schema.skus,
    schema.inbound_supply,
    schema.events,
    schema.idempotency_keys,
)


def order(number: str = "1001", **overrides: Any) -> dict[str, Any]:
    """Return the factory order, deep-copied so tests may edit nested parts freely."""
    return copy.deepcopy(order_payload(number, **overrides))


def line(ref: str, sku: str, quantity: int = 1, **extra: Any) -> dict[str, Any]:
    """Return one order line payload."""
    return {
        "ref": ref,
        "sku": sku,
        "title": f"Item {sku}",
        "quantity": quantity,
        "unit_price": 1000,
        **extra,
    }


def small_order(number: str, **overrides: Any) -> dict[str, Any]:
    """Return a minimal valid order (for batches where size matters)."""
    payload: dict[str, Any] = {
        "number": number,
        "placed_at": "2026-11-01T10:00:00Z",
        "currency": "USD",
        "customer": {"id": "C-1"},
        "lines": [{"sku": "MUG-BLUE", "title": "Blue mug", "quantity": 1, "unit_price": 1800}],
    }
    payload.update(overrides)
    return payload


def parcel(ref: str, *contents: tuple[str, int], **overrides: Any) -> dict[str, Any]:
    """Return a shipment payload carrying `contents` as (line ref, quantity) pairs."""
    payload = shipment_payload(ref, **overrides)
    if contents:
        payload["lines"] = [{"line": ref_, "quantity": qty} for ref_, qty in contents]
    return copy.deepcopy(payload)


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str | tuple[str, ...],
    paths: list[str | tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """Check a problem+json answer; a tuple of codes or paths means "any of these"."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body = response.json()
    codes = (code,) if isinstance(code, str) else code
    assert body["type"] in [f"/problems/{c}" for c in codes], body
    assert body["status"] == status, body
    assert isinstance(body["title"], str), body
    assert body["title"], body
    if paths is not None:
        errors = body.get("errors")
        assert isinstance(errors, list), body
        for error in errors:
            assert isinstance(error.get("message"), str), body
            assert error["message"], body
        got = sorted(error["path"] for error in errors)
        assert len(got) == len(paths), body
        remaining = list(got)
        for expected in paths:
            options = (expected,) if isinstance(expected, str) else expected
            match = next((p for p in remaining if p in options), None)
            assert match is not None, f"no error at {options}: {body}"
            remaining.remove(match)
    return body


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Read every data row, in primary-key order (the databases in these tests are small)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.read() as conn:
        for table in DATA_TABLES:
            rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
            out[table.name] = [tuple(row) for row in rows]
    return out


async def count(db: Database, table: Table, **where: Any) -> int:
    """Count the rows of `table` whose columns equal `where`."""
    stmt = select(func.count()).select_from(table)
    for name, value in where.items():
        stmt = stmt.where(table.c[name] == value)
    async with db.read() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def brand_events(db: Database, brand_id: int) -> list[tuple[int, str]]:
    """Return (id, type) of a brand's events in id order."""
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(schema.events.c.id, schema.events.c.type)
                .where(schema.events.c.brand_id == brand_id)
                .order_by(schema.events.c.id)
            )
        ).all()
    return [(row.id, row.type) for row in rows]


async def order_version(db: Database, brand_id: int, number: str) -> int | None:
    """Return the stored version of a brand's order, or None."""
    async with db.read() as conn:
        return (
            await conn.execute(
                select(schema.orders.c.version).where(
                    schema.orders.c.brand_id == brand_id, schema.orders.c.number == number
                )
            )
        ).scalar_one_or_none()


def utc(text: str) -> dt.datetime:
    """Parse an ISO timestamp from a response."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def settled_feed(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    db: Database,
    brand_id: int,
    after: str | None = None,
    patience: float = 10.0,
) -> dict[str, Any]:
    """Read one feed page (up to 1,000 events) once it shows every event stored for the brand.

    On PostgreSQL the feed holds an event back while any older transaction on the server is still
    running (by design: so a late commit is never skipped), so the page is polled until it has
    caught up with the table.
    """
    stored = [event_id for event_id, _ in await brand_events(db, brand_id)]
    deadline = anyio.current_time() + patience
    params = {"limit": "1000", **({"after": after} if after else {})}
    while True:
        response = await client.get(f"{API}/events", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        shown = [event["id"] for event in page["data"]]
        if not stored or (shown and shown[-1] == stored[-1]) or anyio.current_time() > deadline:
            return page
        await anyio.sleep(0.02)
