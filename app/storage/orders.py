"""Orders as stored: load an order's state, work out the wanted state, write the difference.

Creating many orders at once (the batch API) is a bulk insert; changing an existing order goes
through `OrderState`: load it, build the wanted state, `persist` the difference. Either way the
order's version goes up exactly when something changed, and an event says what.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import bindparam, delete, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.models import CustomerIn, LineIn, OrderIn, ShipmentIn
from app.api.problems import InvalidFields, NotFound, Problem
from app.domain.parcels import (
    TIME_KINDS,
    UNSHIPPABLE,
    ParcelIssue,
    check_parcels,
    check_times,
    effective_status,
    shipped_quantities,
)
from app.storage import changes as changes_feed
from app.storage import etas, events
from app.storage.schema import customers, order_lines, orders, shipment_lines, shipments, skus

UpsertOutcome = Literal["created", "updated", "unchanged"]
TOKEN_BYTES = 24  # 192 random bits in every tracking link

ORDER_FIELDS = (
    "customer_id",
    "placed_at",
    "currency",
    "shipping_region",
    "shipping_city",
    "shipping_postal_code",
)
LINE_FIELDS = (
    "position",
    "sku",
    "title",
    "image_url",
    "quantity",
    "unit_price_minor",
    "status",
    "backorder_type",
    "vendor_date",
    "allocated_at",
)
SHIPMENT_FIELDS = (
    "carrier",
    "service",
    "tracking_number",
    "tracking_url",
    "status",
    "promised_date",
    "carrier_eta",
    "shipped_at",
    "delivered_at",
)


@dataclass
class LineState:
    values: dict[str, Any]
    requested_status: str
    id: int | None = None


@dataclass
class ShipmentState:
    values: dict[str, Any]
    contents: dict[str, int]
    id: int | None = None


@dataclass
class OrderState:
    number: str
    values: dict[str, Any]
    lines: dict[str, LineState] = field(default_factory=dict)
    shipments: dict[str, ShipmentState] = field(default_factory=dict)
    id: int | None = None
    version: int = 0
    token: str = ""


@dataclass(frozen=True)
class Upserted:
    number: str
    result: UpsertOutcome
    version: int
    token: str


# Building states -------------------------------------------------------------------------


def line_values(line: LineIn, position: int) -> dict[str, Any]:
    """Turn a line payload into column values (status is derived later)."""
    backorder_type = line.backorder_type
    if line.status == "backordered" and backorder_type is None:
        backorder_type = "standard"
    return {
        "position": position,
        "sku": line.sku,
        "title": line.title,
        "image_url": str(line.image_url) if line.image_url else None,
        "quantity": line.quantity,
        "unit_price_minor": line.unit_price,
        "status": line.status,
        "backorder_type": backorder_type,
        "vendor_date": line.vendor_date,
        "allocated_at": None,
    }


def shipment_values(shipment: ShipmentIn) -> dict[str, Any]:
    """Turn a parcel payload into column values."""
    return {
        "carrier": shipment.carrier,
        "service": shipment.service,
        "tracking_number": shipment.tracking_number,
        "tracking_url": str(shipment.tracking_url) if shipment.tracking_url else None,
        "status": shipment.status,
        "promised_date": shipment.promised_date,
        "carrier_eta": shipment.carrier_eta,
        "shipped_at": shipment.shipped_at,
        "delivered_at": shipment.delivered_at,
    }


def wanted_state(current: OrderState | None, payload: OrderIn, customer_id: int) -> OrderState:
    """Return the state an upsert payload asks for, starting from the stored one (if any)."""
    state = OrderState(
        number=payload.number,
        values={
            "customer_id": customer_id,
            "placed_at": payload.placed_at,
            "currency": payload.currency,
            "shipping_region": payload.shipping.region,
            "shipping_city": payload.shipping.city,
            "shipping_postal_code": payload.shipping.postal_code,
        },
    )
    if current is not None:
        state.id, state.version, state.token = current.id, current.version, current.token
        state.shipments = copy.deepcopy(current.shipments)
    for position, line in enumerate(payload.lines):
        stored = current.lines.get(line.key) if current else None
        values, requested = line_values(line, position), line.status
        allocated = stored.values["allocated_at"] if stored is not None else None
        if allocated is not None and requested in ("backordered", "in_stock"):
            # Stock was handed to this line; a brand that still says "backordered" has not
            # caught up yet, and must not send it back to the end of the queue.
            values["allocated_at"], values["status"], requested = allocated, "in_stock", "in_stock"
        state.lines[line.key] = LineState(values, requested, stored.id if stored else None)
    if current is not None:
        # Lines the brand no longer sends are cancelled, never deleted: parcels may name them.
        for ref, stored in current.lines.items():
            if ref not in state.lines:
                values = dict(stored.values, status="cancelled", allocated_at=None)
                state.lines[ref] = LineState(values, "cancelled", stored.id)
    for shipment in payload.shipments:
        stored_parcel = state.shipments.get(shipment.ref)
        state.shipments[shipment.ref] = ShipmentState(
            shipment_values(shipment),
            {item.line: item.quantity for item in shipment.lines},
            stored_parcel.id if stored_parcel else None,
        )
    return state


def settle(state: OrderState, where: Callable[[ParcelIssue], str]) -> None:
    """Check the parcels against the lines and derive each line's status; raise on misfits."""
    issues = check_parcels(
        {
            ref: (line.values["quantity"], line.requested_status)
            for ref, line in state.lines.items()
        },
        {ref: parcel.contents for ref, parcel in state.shipments.items()},
    )
    unknown = [issue for issue in issues if issue.kind == "unknown_line"]
    errors = [{"path": where(i), "message": f"no line {i.line!r} in this order"} for i in unknown]
    errors += [
        {"path": where(i), "message": i.message}
        for i in check_times(
            state.values["placed_at"],
            {
                ref: (p.values["shipped_at"], p.values["delivered_at"])
                for ref, p in state.shipments.items()
            },
        )
    ]
    if errors:
        raise InvalidFields(errors)
    if issues:
        raise Problem(
            "Parcels hold more of a line than the order has, or a line that will not ship.",
            code="quantity-exceeded",
            status=409,
            errors=[{"path": where(i), "message": i.message} for i in issues],
        )
    shipped = shipped_quantities({ref: p.contents for ref, p in state.shipments.items()})
    for ref, line in state.lines.items():
        parcels = [p for p in state.shipments.values() if ref in p.contents]
        delivered = bool(parcels) and all(p.values["status"] == "delivered" for p in parcels)
        line.values["status"] = effective_status(
            line.requested_status, line.values["quantity"], shipped.get(ref, 0), delivered
        )


def payload_locator(payload: OrderIn, prefix: str) -> Callable[[ParcelIssue], str]:
    """Point a parcel issue at the field of `payload` that caused it."""
    parcel_index = {s.ref: j for j, s in enumerate(payload.shipments)}
    line_index = {line.key: i for i, line in enumerate(payload.lines)}

    def where(issue: ParcelIssue) -> str:
        j = parcel_index.get(issue.parcel)
        if issue.kind in TIME_KINDS:
            return f"{prefix}shipments[{j}].{issue.line}" if j is not None else f"{prefix}placed_at"
        if j is not None:
            k = next(
                k for k, item in enumerate(payload.shipments[j].lines) if item.line == issue.line
            )
            return f"{prefix}shipments[{j}].lines[{k}].line"
        i = line_index.get(issue.line)
        return f"{prefix}lines[{i}]" if i is not None else f"{prefix}lines"

    return where


# Loading ---------------------------------------------------------------------------------


async def lock_orders(conn: AsyncConnection, brand_id: int, numbers: Sequence[str]) -> None:
    """Serialise writers of the same order numbers until the transaction ends.

    SQLite already runs one writer at a time. On PostgreSQL a transaction-scoped advisory lock per
    (brand, number), taken in sorted order so two batches cannot deadlock, also covers numbers
    that do not exist yet, so two requests creating one order do not race.
    """
    if conn.dialect.name != "postgresql" or not numbers:
        return
    await conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(CAST(:brand AS integer), hashtext(n))"
            " FROM unnest(CAST(:numbers AS text[])) AS n ORDER BY n"
        ),
        {"brand": brand_id, "numbers": sorted(set(numbers))},
    )


async def load_states(
    conn: AsyncConnection, brand_id: int, numbers: Sequence[str], *, lock: bool = False
) -> dict[str, OrderState]:
    """Load the stored state of the brand's orders (locked for writing when `lock`)."""
    if not numbers:
        return {}
    if lock:
        await lock_orders(conn, brand_id, numbers)
    rows = (
        await conn.execute(
            select(orders).where(orders.c.brand_id == brand_id, orders.c.number.in_(numbers))
        )
    ).all()
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


# Customers -------------------------------------------------------------------------------

_CUSTOMER_FIELDS = (
    "external_id",
    "email",
    "phone",
    "name",
    "locale",
    "timezone",
    "sms_consent",
    "email_consent",
)


def _customer_values(customer: CustomerIn) -> dict[str, Any]:
    given = customer.model_fields_set
    values: dict[str, Any] = {}
    mapping = {"id": "external_id"}
    for name in (
        "id",
        "email",
        "phone",
        "name",
        "locale",
        "timezone",
        "sms_consent",
        "email_consent",
    ):
        if name in given:
            value = getattr(customer, name)
            values[mapping.get(name, name)] = value.lower() if name == "email" and value else value
    return values


async def resolve_customers(
    conn: AsyncConnection, brand_id: int, payloads: Sequence[CustomerIn], now: dt.datetime
) -> tuple[list[int], set[int]]:
    """Find or create each payload's customer; also return the ids of customers it changed.

    Matching: on the brand's customer id when the payload has one, else on email, then phone.
    Only fields the payload sends are written.
    """
    wanted = [_customer_values(c) for c in payloads]
    ext_ids = {v["external_id"] for v in wanted if v.get("external_id")}
    emails = {v["email"] for v in wanted if v.get("email")}
    phones = {v["phone"] for v in wanted if v.get("phone")}
    conditions = []
    if ext_ids:
        conditions.append(customers.c.external_id.in_(ext_ids))
    if emails:
        conditions.append(customers.c.email.in_(emails))
    if phones:
        conditions.append(customers.c.phone.in_(phones))
    rows = (
        await conn.execute(
            select(customers).where(customers.c.brand_id == brand_id, or_(*conditions))
        )
    ).all()
    index: dict[tuple[str, str], dict[str, Any]] = {}

    def remember(record: dict[str, Any]) -> None:
        for name in ("external_id", "email", "phone"):
            if record.get(name):
                index.setdefault((name, record[name]), record)

    for r in rows:
        remember({"id": r.id, **{name: getattr(r, name) for name in _CUSTOMER_FIELDS}})
    chosen: list[dict[str, Any]] = []
    fresh: list[dict[str, Any]] = []
    dirty: dict[int, dict[str, Any]] = {}
    for values in wanted:
        # The brand's own customer id is decisive; without one, the email, then the phone.
        keys = ("external_id",) if values.get("external_id") else ("email", "phone")
        record = next(
            (
                index[(name, values[name])]
                for name in keys
                if values.get(name) and (name, values[name]) in index
            ),
            None,
        )
        if record is None:
            record = {"id": None, "sms_consent": False, "email_consent": True, **values}
            fresh.append(record)
        elif any(record.get(name) != value for name, value in values.items()):
            record.update(values)
            if record["id"] is not None:
                dirty[record["id"]] = record
        remember(record)
        chosen.append(record)
    if fresh:
        inserted = await conn.execute(
            customers.insert().returning(customers.c.id, sort_by_parameter_order=True),
            [
                {
                    "brand_id": brand_id,
                    **{name: record.get(name) for name in _CUSTOMER_FIELDS},
                    "created_at": now,
                    "updated_at": now,
                }
                for record in fresh
            ],
        )
        for record, new_id in zip(fresh, inserted.scalars().all(), strict=True):
            record["id"] = new_id
    if dirty:
        await conn.execute(
            update(customers)
            .where(customers.c.id == bindparam("_id"))
            .values({name: bindparam(name) for name in (*_CUSTOMER_FIELDS, "updated_at")}),
            [
                {"_id": cid, **{name: r.get(name) for name in _CUSTOMER_FIELDS}, "updated_at": now}
                for cid, r in dirty.items()
            ],
        )
    return [record["id"] for record in chosen], set(dirty)


# Writing ---------------------------------------------------------------------------------


async def insert_new(
    conn: AsyncConnection, brand_id: int, states: Sequence[OrderState], now: dt.datetime
) -> None:
    """Bulk-insert orders that do not exist yet, with their lines and parcels."""
    if not states:
        return
    for state in states:
        state.token = secrets.token_urlsafe(TOKEN_BYTES)
        state.version = 1
    result = await conn.execute(
        orders.insert().returning(orders.c.id, sort_by_parameter_order=True),
        [
            {
                "brand_id": brand_id,
                "number": s.number,
                "tracking_token": s.token,
                "version": 1,
                "created_at": now,
                "updated_at": now,
                **s.values,
            }
            for s in states
        ],
    )
    for state, order_id in zip(states, result.scalars().all(), strict=True):
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


async def _insert_lines(
    conn: AsyncConnection,
    brand_id: int,
    items: Sequence[tuple[OrderState, str, LineState]],
    now: dt.datetime,
) -> None:
    if not items:
        return
    result = await conn.execute(
        order_lines.insert().returning(order_lines.c.id, sort_by_parameter_order=True),
        [
            {
                "order_id": state.id,
                "brand_id": brand_id,
                "ref": ref,
                "created_at": now,
                "updated_at": now,
                **line.values,
            }
            for state, ref, line in items
        ],
    )
    for (_, _, line), line_id in zip(items, result.scalars().all(), strict=True):
        line.id = line_id


async def _insert_parcels(
    conn: AsyncConnection,
    brand_id: int,
    items: Sequence[tuple[OrderState, str, ShipmentState]],
    now: dt.datetime,
) -> None:
    if not items:
        return
    result = await conn.execute(
        shipments.insert().returning(shipments.c.id, sort_by_parameter_order=True),
        [
            {
                "order_id": state.id,
                "brand_id": brand_id,
                "ref": ref,
                "created_at": now,
                "updated_at": now,
                **parcel.values,
            }
            for state, ref, parcel in items
        ],
    )
    for (_, _, parcel), parcel_id in zip(items, result.scalars().all(), strict=True):
        parcel.id = parcel_id
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
    customer_ids, changed_customers = await resolve_customers(
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


def queue_skus(old: OrderState | None, new: OrderState) -> set[str]:
    """Return the SKUs whose waiting queues a change from `old` to `new` may have moved."""
    shipped_new = shipped_quantities({ref: p.contents for ref, p in new.shipments.items()})
    shipped_old = (
        shipped_quantities({ref: p.contents for ref, p in old.shipments.items()}) if old else {}
    )
    touched: set[str] = set()
    # The order's date orders it in every queue; its region sets the transit days.
    order_moved = old is not None and any(
        old.values[name] != new.values[name] for name in ("placed_at", "shipping_region")
    )
    for ref, line in new.lines.items():
        before = old.lines.get(ref) if old else None
        waiting = line.values["status"] == "backordered" or (
            before is not None and before.values["status"] == "backordered"
        )
        if not waiting:
            continue
        if (
            order_moved
            or before is None
            or before.values != line.values
            or shipped_old.get(ref, 0) != shipped_new.get(ref, 0)
        ):
            touched.add(line.values["sku"])
            if before is not None:
                touched.add(before.values["sku"])
    return touched


async def current_versions(conn: AsyncConnection, order_ids: Sequence[int]) -> dict[int, int]:
    """Read the orders' versions (the ETA engine may have moved them on)."""
    if not order_ids:
        return {}
    rows = await conn.execute(
        select(orders.c.id, orders.c.version).where(orders.c.id.in_(order_ids))
    )
    return {r.id: r.version for r in rows}
