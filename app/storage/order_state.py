"""An order's state as plain data: what is stored, what a change asks for, what it implies.

No I/O here: `app.storage.orders` loads and writes these states.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.api.models import LineIn, OrderIn, ShipmentIn
from app.api.problems import InvalidFields, Problem
from app.domain.parcels import (
    TIME_KINDS,
    ParcelIssue,
    check_parcels,
    check_times,
    effective_status,
    shipped_quantities,
)

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
