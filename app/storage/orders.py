"""Orders as stored: load an order's state, work out the wanted state, write the difference.

Creating many orders at once (the batch API) is a bulk insert; changing an existing order goes
through `OrderState`: load it, build the wanted state, `persist` the difference. Either way the
order's version goes up exactly when something changed, and an event says what.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ARRAY, String, Table, bindparam, cast, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.models import OrderIn
from app.api.problems import InvalidFields, NotFound
from app.domain.parcels import UNSHIPPABLE, shipped_quantities
from app.storage import changes as changes_feed
from app.storage import customers, etas, events
from app.storage.dialect import insert_with_ids, lock_keys
from app.storage.order_state import (
    LINE_FIELDS,
    ORDER_FIELDS,
    SHIPMENT_FIELDS,
    LineState,
    OrderState,
    ShipmentState,
    payload_locator,
    queue_skus,
    settle,
    wanted_state,
)
from app.storage.schema import order_lines, orders, shipment_lines, shipments, skus

UpsertOutcome = Literal["created", "updated", "unchanged"]
TOKEN_BYTES = 24  # 192 random bits in every tracking link
SMS_CODE_LENGTH = 12  # about 71 random bits in the short link an SMS carries
SMS_CODE_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Upserted:
    number: str
    result: UpsertOutcome
    version: int
    token: str


# Loading ---------------------------------------------------------------------------------


async def load_states(
    conn: AsyncConnection, brand_id: int, numbers: Sequence[str], *, lock: bool = False
) -> dict[str, OrderState]:
    """Load the stored state of the brand's orders (locked for writing when `lock`)."""
    if not numbers:
        return {}
    if lock:
        await lock_keys(conn, brand_id, [f"order:{number}" for number in numbers])
    query = select(orders).where(orders.c.brand_id == brand_id)
    if conn.dialect.name == "postgresql":
        # One index probe per number, whatever the planner believes about the table: an
        # IN list can get a plan that scans every order of the brand before statistics exist.
        wanted = (
            func.unnest(cast(list(numbers), ARRAY(String)))
            .table_valued("number")
            .render_derived(name="n")
        )
        query = query.join(wanted, orders.c.number == wanted.c.number)
    else:
        query = query.where(orders.c.number.in_(numbers))
    rows = (await conn.execute(query)).all()
    states = {
        r.number: OrderState(
            number=r.number,
            values={name: getattr(r, name) for name in ORDER_FIELDS},
            id=r.id,
            version=r.version,
            token=r.tracking_token,
        )
        for r in rows
    }
    if not states:
        return states
    by_id = {state.id: state for state in states.values()}
    line_rows = (
        await conn.execute(select(order_lines).where(order_lines.c.order_id.in_(list(by_id))))
    ).all()
    line_refs: dict[int, str] = {}
    for r in line_rows:
        values = {name: getattr(r, name) for name in LINE_FIELDS}
        by_id[r.order_id].lines[r.ref] = LineState(values, r.status, r.id)
        line_refs[r.id] = r.ref
    parcel_rows = (
        await conn.execute(select(shipments).where(shipments.c.order_id.in_(list(by_id))))
    ).all()
    parcels: dict[int, ShipmentState] = {}
    for r in parcel_rows:
        parcel = ShipmentState({name: getattr(r, name) for name in SHIPMENT_FIELDS}, {}, r.id)
        by_id[r.order_id].shipments[r.ref] = parcel
        parcels[r.id] = parcel
    if parcels:
        content_rows = (
            await conn.execute(
                select(shipment_lines).where(shipment_lines.c.shipment_id.in_(list(parcels)))
            )
        ).all()
        for r in content_rows:
            parcels[r.shipment_id].contents[line_refs[r.order_line_id]] = r.quantity
    return states


async def load_state(
    conn: AsyncConnection, brand_id: int, number: str, *, lock: bool = False
) -> OrderState:
    """Load one order's state or raise 404 (also for another brand's order)."""
    state = (await load_states(conn, brand_id, [number], lock=lock)).get(number)
    if state is None:
        raise NotFound(f"No order {number!r}.")
    return state


# Writing ---------------------------------------------------------------------------------


def new_sms_code() -> str:
    """Draw the random code of an order's short SMS link."""
    return "".join(secrets.choice(SMS_CODE_ALPHABET) for _ in range(SMS_CODE_LENGTH))


async def insert_new(
    conn: AsyncConnection, brand_id: int, states: Sequence[OrderState], now: dt.datetime
) -> None:
    """Bulk-insert orders that do not exist yet, with their lines and parcels."""
    if not states:
        return
    for state in states:
        state.token = secrets.token_urlsafe(TOKEN_BYTES)
        state.version = 1
    ids = await insert_with_ids(
        conn,
        orders,
        [
            {
                "brand_id": brand_id,
                "number": s.number,
                "tracking_token": s.token,
                "sms_code": new_sms_code(),
                "version": 1,
                "created_at": now,
                "updated_at": now,
                **s.values,
            }
            for s in states
        ],
    )
    for state, order_id in zip(states, ids, strict=True):
        state.id = order_id
    await _insert_lines(
        conn, brand_id, [(s, ref, line) for s in states for ref, line in s.lines.items()], now
    )
    await _insert_parcels(
        conn, brand_id, [(s, ref, p) for s in states for ref, p in s.shipments.items()], now
    )
    await events.record(
        conn,
        brand_id,
        [
            events.NewEvent(
                s.id,
                "order_created",
                {
                    "lines": len(s.lines),
                    "backordered_lines": sum(
                        1 for line in s.lines.values() if line.values["status"] == "backordered"
                    ),
                    "shipments": len(s.shipments),
                },
            )
            for s in states
        ],
        now,
    )


async def _insert_children(
    conn: AsyncConnection,
    table: Table,
    brand_id: int,
    items: Sequence[tuple[OrderState, str, LineState | ShipmentState]],
    now: dt.datetime,
) -> None:
    """Insert an order's lines or parcels (keyed by ref) and give each state its new id."""
    if not items:
        return
    ids = await insert_with_ids(
        conn,
        table,
        [
            {
                "order_id": state.id,
                "brand_id": brand_id,
                "ref": ref,
                "created_at": now,
                "updated_at": now,
                **child.values,
            }
            for state, ref, child in items
        ],
    )
    for (_, _, child), child_id in zip(items, ids, strict=True):
        child.id = child_id


async def _insert_lines(
    conn: AsyncConnection,
    brand_id: int,
    items: Sequence[tuple[OrderState, str, LineState]],
    now: dt.datetime,
) -> None:
    await _insert_children(conn, order_lines, brand_id, items, now)


async def _insert_parcels(
    conn: AsyncConnection,
    brand_id: int,
    items: Sequence[tuple[OrderState, str, ShipmentState]],
    now: dt.datetime,
) -> None:
    await _insert_children(conn, shipments, brand_id, items, now)
    await _insert_contents(conn, items)


async def _insert_contents(
    conn: AsyncConnection, items: Sequence[tuple[OrderState, str, ShipmentState]]
) -> None:
    rows = [
        {"shipment_id": parcel.id, "order_line_id": state.lines[line].id, "quantity": qty}
        for state, _, parcel in items
        for line, qty in parcel.contents.items()
    ]
    if rows:
        await conn.execute(shipment_lines.insert(), rows)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in new.items() if old.get(name) != value}


async def persist(
    conn: AsyncConnection,
    brand_id: int,
    old: OrderState,
    new: OrderState,
    now: dt.datetime,
    event_type: str = "order_updated",
    data: dict[str, Any] | None = None,
    force: bool = False,
    also_changed: Sequence[str] = (),
) -> list[str]:
    """Write the difference between two states of a stored order; return what changed.

    With changes (or `force`), the order's version goes up and one `event_type` event records
    the changes plus `data`.
    """
    assert new.id is not None
    assert new.id == old.id
    changes: list[str] = list(also_changed)
    order_changes = _changed(old.values, new.values)
    changes += sorted(order_changes)

    fresh_lines = [(new, ref, line) for ref, line in new.lines.items() if line.id is None]
    await _insert_lines(conn, brand_id, fresh_lines, now)
    changes += [f"lines.{ref}.added" for _, ref, _ in fresh_lines]
    line_updates = []
    for ref, line in new.lines.items():
        before = old.lines.get(ref)
        if before is None:
            continue
        diff = _changed(before.values, line.values)
        if diff:
            line_updates.append({"_id": line.id, **line.values, "updated_at": now})
            changes += [f"lines.{ref}.{name}" for name in sorted(diff)]
    if line_updates:
        await conn.execute(
            update(order_lines)
            .where(order_lines.c.id == bindparam("_id"))
            .values({name: bindparam(name) for name in (*LINE_FIELDS, "updated_at")}),
            line_updates,
        )

    fresh_parcels = [(new, ref, p) for ref, p in new.shipments.items() if p.id is None]
    await _insert_parcels(conn, brand_id, fresh_parcels, now)
    changes += [f"shipments.{ref}.added" for _, ref, _ in fresh_parcels]
    refilled = []
    for ref, parcel in new.shipments.items():
        stored = old.shipments.get(ref)
        if stored is None:
            continue
        diff = _changed(stored.values, parcel.values)
        if diff:
            await conn.execute(
                update(shipments)
                .where(shipments.c.id == parcel.id)
                .values(**parcel.values, updated_at=now)
            )
            changes += [f"shipments.{ref}.{name}" for name in sorted(diff)]
        if stored.contents != parcel.contents:
            refilled.append((new, ref, parcel))
            changes.append(f"shipments.{ref}.lines")
    if refilled:
        await conn.execute(
            delete(shipment_lines).where(
                shipment_lines.c.shipment_id.in_([p.id for _, _, p in refilled])
            )
        )
        await _insert_contents(conn, refilled)

    if not changes and not force:
        return changes
    new.version = old.version + 1
    await conn.execute(
        update(orders)
        .where(orders.c.id == new.id)
        .values(**order_changes, version=new.version, updated_at=now)
    )
    changes_feed.note(conn, {new.id: new.version})
    await events.record(
        conn,
        brand_id,
        [events.NewEvent(new.id, event_type, {"changes": changes, **(data or {})})],
        now,
    )
    return changes


async def upsert(
    conn: AsyncConnection,
    brand_id: int,
    payloads: Sequence[OrderIn],
    now: dt.datetime,
    prefix: Callable[[int], str],
) -> list[Upserted]:
    """Create or update orders keyed on their numbers, in one transaction."""
    seen: set[str] = set()
    errors: list[dict[str, str]] = []
    for i, payload in enumerate(payloads):
        if payload.number in seen:
            errors.append(
                {
                    "path": f"{prefix(i)}number",
                    "message": "this order number appears twice in the request",
                }
            )
        seen.add(payload.number)
        errors += payload.repeats(prefix(i))
    if errors:
        raise InvalidFields(errors)
    stored = await load_states(conn, brand_id, [p.number for p in payloads], lock=True)
    customer_ids, changed_customers = await customers.resolve(
        conn, brand_id, [p.customer for p in payloads], now
    )
    wanted: list[OrderState] = []
    for i, (payload, customer_id) in enumerate(zip(payloads, customer_ids, strict=True)):
        state = wanted_state(stored.get(payload.number), payload, customer_id)
        settle(state, payload_locator(payload, prefix(i)))
        wanted.append(state)
    await insert_new(conn, brand_id, [s for s in wanted if s.id is None], now)
    results: list[Upserted] = []
    waiting: set[str] = set()
    for state in wanted:
        before = stored.get(state.number)
        result: UpsertOutcome = "created"
        if before is not None:
            customer = ["customer"] if state.values["customer_id"] in changed_customers else []
            changes = await persist(conn, brand_id, before, state, now, also_changed=customer)
            result = "updated" if changes else "unchanged"
            waiting |= await release_allocations(conn, brand_id, before, state, now)
        waiting |= queue_skus(before, state)
        results.append(Upserted(state.number, result, state.version, state.token))
    if waiting:
        await etas.recompute(conn, brand_id, waiting, now)
        versions = await current_versions(conn, [s.id for s in wanted if s.id is not None])
        results = [
            dataclasses.replace(r, version=versions.get(s.id or 0, r.version))
            for r, s in zip(results, wanted, strict=True)
        ]
    return results


async def release_allocations(
    conn: AsyncConnection, brand_id: int, old: OrderState, new: OrderState, now: dt.datetime
) -> set[str]:
    """Give back to stock the units of allocated lines that will no longer ship; return SKUs."""
    shipped = shipped_quantities({ref: p.contents for ref, p in new.shipments.items()})
    units: dict[str, int] = {}
    for ref, line in new.lines.items():
        before = old.lines.get(ref)
        if before is None or before.values["allocated_at"] is None:
            continue
        if line.values["allocated_at"] is None and line.values["status"] in UNSHIPPABLE:
            sku = before.values["sku"]
            left = before.values["quantity"] - shipped.get(ref, 0)
            units[sku] = units.get(sku, 0) + max(left, 0)
    for sku, count in units.items():
        await conn.execute(
            update(skus)
            .where(skus.c.brand_id == brand_id, skus.c.sku == sku)
            .values(on_hand=skus.c.on_hand + count, updated_at=now)
        )
    return set(units)


async def current_versions(conn: AsyncConnection, order_ids: Sequence[int]) -> dict[int, int]:
    """Read the orders' versions (the ETA engine may have moved them on)."""
    if not order_ids:
        return {}
    rows = await conn.execute(
        select(orders.c.id, orders.c.version).where(orders.c.id.in_(order_ids))
    )
    return {r.id: r.version for r in rows}
