"""Parcels of an existing order: add one, change one, append carrier checkpoints."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.models import CheckpointIn, ShipmentIn, ShipmentPatch
from app.api.problems import Conflict, InvalidFields, NotFound
from app.domain.parcels import CLOCK_SKEW, TIME_KINDS, ParcelIssue
from app.storage import etas
from app.storage.order_state import (
    OrderState,
    ShipmentState,
    queue_skus,
    settle,
    shipment_values,
)
from app.storage.orders import load_state, persist
from app.storage.schema import checkpoints

# A carrier checkpoint moves the parcel to its status, except that a parcel already delivered
# only leaves that state for a return or a loss.
_AFTER_DELIVERY = frozenset({"delivered", "returned", "lost", "exception"})


def _patch_locator(issue: ParcelIssue) -> str:
    return issue.line if issue.kind in TIME_KINDS else "status"


def _body_locator(body: ShipmentIn) -> Callable[[ParcelIssue], str]:
    def where(issue: ParcelIssue) -> str:
        if issue.kind in TIME_KINDS:
            return issue.line
        for k, item in enumerate(body.lines):
            if item.line == issue.line:
                return f"lines[{k}].line"
        return "lines"

    return where


async def add_parcel(
    conn: AsyncConnection, brand_id: int, number: str, body: ShipmentIn, now: dt.datetime
) -> OrderState:
    """Add a parcel to an order; 409 if its ref exists or it packs more than the lines hold."""
    errors = body.repeats()
    if errors:
        raise InvalidFields(errors)
    old = await load_state(conn, brand_id, number, lock=True)
    if body.ref in old.shipments:
        raise Conflict(f"Order {number!r} already has a shipment {body.ref!r}.")
    new = copy.deepcopy(old)
    new.shipments[body.ref] = ShipmentState(
        shipment_values(body), {item.line: item.quantity for item in body.lines}
    )
    settle(new, _body_locator(body))
    await persist(conn, brand_id, old, new, now, "shipment_created")
    await etas.recompute(conn, brand_id, queue_skus(old, new), now)
    return new


async def change_parcel(
    conn: AsyncConnection,
    brand_id: int,
    number: str,
    ref: str,
    patch: ShipmentPatch,
    now: dt.datetime,
) -> OrderState:
    """Change a parcel's status, dates or link."""
    old = await load_state(conn, brand_id, number, lock=True)
    if ref not in old.shipments:
        raise NotFound(f"Order {number!r} has no shipment {ref!r}.")
    new = copy.deepcopy(old)
    values = new.shipments[ref].values
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        values[name] = str(value) if name == "tracking_url" and value is not None else value
    if values["status"] == "delivered" and values["delivered_at"] is None:
        values["delivered_at"] = now
    settle(new, _patch_locator)
    await persist(conn, brand_id, old, new, now, "shipment_updated")
    await etas.recompute(conn, brand_id, queue_skus(old, new), now)
    return new


async def add_checkpoint(
    conn: AsyncConnection,
    brand_id: int,
    number: str,
    ref: str,
    body: CheckpointIn,
    now: dt.datetime,
) -> OrderState:
    """Append a carrier scan; the newest scan sets the parcel's status."""
    old = await load_state(conn, brand_id, number, lock=True)
    parcel = old.shipments.get(ref)
    if parcel is None or parcel.id is None:
        raise NotFound(f"Order {number!r} has no shipment {ref!r}.")
    if body.occurred_at < old.values["placed_at"] - CLOCK_SKEW:
        raise InvalidFields(
            [{"path": "occurred_at", "message": "earlier than the order was placed"}]
        )
    latest = (
        await conn.execute(
            select(checkpoints.c.occurred_at)
            .where(checkpoints.c.shipment_id == parcel.id)
            .order_by(checkpoints.c.occurred_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    await conn.execute(
        checkpoints.insert().values(
            shipment_id=parcel.id,
            occurred_at=body.occurred_at,
            status=body.status,
            description=body.description,
            city=body.city,
            region=body.region,
            country=body.country,
            created_at=now,
        )
    )
    new = copy.deepcopy(old)
    values = new.shipments[ref].values
    is_newest = latest is None or body.occurred_at >= latest
    if is_newest and not (values["status"] == "delivered" and body.status not in _AFTER_DELIVERY):
        values["status"] = body.status
        if body.status == "delivered":
            values["delivered_at"] = body.occurred_at
        if values["shipped_at"] is None and body.status != "label_created":
            values["shipped_at"] = body.occurred_at
    settle(new, _patch_locator)
    await persist(
        conn,
        brand_id,
        old,
        new,
        now,
        "checkpoint_added",
        {"shipment": ref, "status": body.status, "occurred_at": body.occurred_at.isoformat()},
        force=True,
    )
    await etas.recompute(conn, brand_id, queue_skus(old, new), now)
    return new
