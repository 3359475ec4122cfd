"""Order, parcel and checkpoint endpoints."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.endpoint import Call, Reply
from app.api.models import (
    BatchResult,
    CheckpointIn,
    CheckpointOut,
    ChoiceOut,
    CustomerOut,
    DeliveryRange,
    ExpectedParcelOut,
    LineEtaOut,
    LineOut,
    OrderBatchIn,
    OrderIn,
    OrderOut,
    ShipmentIn,
    ShipmentLineOut,
    ShipmentOut,
    ShipmentPatch,
    UpsertResult,
)
from app.domain.eta import LineEta, Queue, Reason, consolidate, window_end
from app.domain.parcels import shipped_quantities
from app.services import Services
from app.storage import etas, parcels
from app.storage import orders as store
from app.storage.order_state import OrderState
from app.storage.schema import checkpoints, choices, customers, order_lines, orders


async def order_view(
    conn: AsyncConnection, services: Services, brand_id: int, number: str
) -> OrderOut:
    """Read an order with its customer, lines, parcels and their checkpoints."""
    state = await store.load_state(conn, brand_id, number)
    row = (
        await conn.execute(
            select(orders.c.created_at, orders.c.updated_at, customers)
            .select_from(orders)
            .outerjoin(customers, customers.c.id == orders.c.customer_id)
            .where(orders.c.id == state.id)
        )
    ).one()
    parcel_ids = {p.id: ref for ref, p in state.shipments.items()}
    scans: dict[str, list[CheckpointOut]] = {ref: [] for ref in state.shipments}
    if parcel_ids:
        for scan in (
            await conn.execute(
                select(checkpoints)
                .where(checkpoints.c.shipment_id.in_(list(parcel_ids)))
                .order_by(checkpoints.c.occurred_at.desc(), checkpoints.c.id.desc())
            )
        ).all():
            scans[parcel_ids[scan.shipment_id]].append(
                CheckpointOut(
                    occurred_at=scan.occurred_at,
                    status=scan.status,
                    description=scan.description,
                    city=scan.city,
                    region=scan.region,
                    country=scan.country,
                )
            )
    waiting = await _waiting_etas(conn, state)
    policy = await etas.load_rules(conn, brand_id)
    parcels_expected = consolidate(
        (eta for eta, _ in waiting.values()), policy.policy.consolidation_window_days
    )
    group_of = {line_id: p.key for p in parcels_expected for line_id in p.line_ids}
    ref_of = {line.id: ref for ref, line in state.lines.items()}
    shipped = shipped_quantities({ref: p.contents for ref, p in state.shipments.items()})
    lines = sorted(state.lines.items(), key=lambda item: item[1].values["position"])
    customer = None
    if row.id is not None:
        customer = CustomerOut(
            id=row.external_id,
            email=row.email,
            phone=row.phone,
            name=row.name,
            locale=row.locale,
            timezone=row.timezone,
            sms_consent=row.sms_consent,
            email_consent=row.email_consent,
        )
    offered = [
        ChoiceOut(
            id=c.id,
            line=ref_of.get(c.order_line_id, ""),
            reason=c.reason,
            state=c.state,
            deadline=c.deadline,
            default_action=c.default_action,
            decision=c.decision,
            alternative=c.alternative_sku,
            decided_at=c.decided_at,
            decided_via=c.decided_via,
        )
        for c in await conn.execute(
            select(choices).where(choices.c.order_id == state.id).order_by(choices.c.id)
        )
    ]
    return OrderOut(
        choices=offered,
        number=state.number,
        placed_at=state.values["placed_at"],
        currency=state.values["currency"],
        version=state.version,
        tracking_url=services.tracking_url(state.token),
        customer=customer,
        shipping={
            "region": state.values["shipping_region"],
            "city": state.values["shipping_city"],
            "postal_code": state.values["shipping_postal_code"],
        },
        lines=[
            LineOut(
                ref=ref,
                sku=line.values["sku"],
                title=line.values["title"],
                image_url=line.values["image_url"],
                quantity=line.values["quantity"],
                unit_price=line.values["unit_price_minor"],
                status=line.values["status"],
                backorder_type=line.values["backorder_type"],
                vendor_date=line.values["vendor_date"],
                shipped_quantity=shipped.get(ref, 0),
                eta=_eta_out(waiting.get(line.id or 0), group_of),
            )
            for ref, line in lines
        ],
        shipments=[
            ShipmentOut(
                ref=ref,
                **{k: v for k, v in p.values.items()},
                delayed=bool(
                    p.values["carrier_eta"]
                    and p.values["promised_date"]
                    and p.values["status"] != "delivered"
                    and p.values["carrier_eta"] > p.values["promised_date"]
                ),
                lines=[ShipmentLineOut(line=k, quantity=q) for k, q in p.contents.items()],
                checkpoints=scans[ref],
            )
            for ref, p in state.shipments.items()
        ],
        window_end=window_end(
            state.values["placed_at"].astimezone(policy.timezone),
            policy.policy.fulfillment_window_days,
        ),
        expected_parcels=[
            ExpectedParcelOut(
                key=p.key,
                kind=p.kind.value,
                lines=[ref_of[line_id] for line_id in p.line_ids],
                ship_by=p.ship_by,
                delivery=_range(p.delivery_from, p.delivery_to),
            )
            for p in parcels_expected
        ],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _waiting_etas(conn: AsyncConnection, state: OrderState) -> dict[int, tuple[LineEta, str]]:
    """Read the stored ETAs of the order's waiting lines."""
    rows = await conn.execute(
        select(order_lines.c.id, *(order_lines.c[name] for name in etas.ETA_FIELDS)).where(
            order_lines.c.order_id == state.id,
            order_lines.c.status == "backordered",
            order_lines.c.eta_queue.is_not(None),
        )
    )
    return {
        r.id: (
            LineEta(
                r.id,
                Queue(r.eta_queue),
                r.queue_position,
                r.available_from,
                r.ship_by,
                r.delivery_from,
                r.delivery_to,
                Reason(r.eta_reason),
                r.eta_supply_ref,
                r.eta_widening_days or 0,
            ),
            r.window_state or "no_date",
        )
        for r in rows
    }


def _range(earliest: dt.date | None, latest: dt.date | None) -> DeliveryRange | None:
    if earliest is None or latest is None:
        return None
    return DeliveryRange(earliest=earliest, latest=latest)


def _eta_out(found: tuple[LineEta, str] | None, group_of: dict[int, str]) -> LineEtaOut | None:
    if found is None:
        return None
    eta, state = found
    return LineEtaOut(
        queue=eta.queue.value,
        queue_position=eta.queue_position,
        available_from=eta.available_from,
        ship_by=eta.ship_by,
        delivery=_range(eta.delivery_from, eta.delivery_to),
        reason=eta.reason.value,
        supply_ref=eta.supply_ref,
        window_state=state,
        group=group_of.get(eta.line_id),
    )


async def upsert_order(call: Call) -> Reply:
    body: OrderIn = call.body
    [result] = await store.upsert(call.conn, call.brand.id, [body], call.now, lambda i: "")
    view = await order_view(call.conn, call.services, call.brand.id, body.number)
    return Reply(view, 201 if result.result == "created" else 200)


async def upsert_orders_batch(call: Call) -> Reply:
    body: OrderBatchIn = call.body
    results = await store.upsert(
        call.conn, call.brand.id, body.orders, call.now, lambda i: f"orders[{i}]."
    )
    return Reply(
        BatchResult(
            results=[
                UpsertResult(
                    number=r.number,
                    result=r.result,
                    version=r.version,
                    tracking_url=call.services.tracking_url(r.token),
                )
                for r in results
            ]
        )
    )


async def get_order(call: Call) -> Reply:
    return Reply(await order_view(call.conn, call.services, call.brand.id, call.path["number"]))


async def create_shipment(call: Call) -> Reply:
    body: ShipmentIn = call.body
    number = call.path["number"]
    await parcels.add_parcel(call.conn, call.brand.id, number, body, call.now)
    return Reply(await order_view(call.conn, call.services, call.brand.id, number), 201)


async def update_shipment(call: Call) -> Reply:
    body: ShipmentPatch = call.body
    number = call.path["number"]
    await parcels.change_parcel(call.conn, call.brand.id, number, call.path["ref"], body, call.now)
    return Reply(await order_view(call.conn, call.services, call.brand.id, number))


async def add_checkpoint(call: Call) -> Reply:
    body: CheckpointIn = call.body
    number = call.path["number"]
    await parcels.add_checkpoint(call.conn, call.brand.id, number, call.path["ref"], body, call.now)
    return Reply(await order_view(call.conn, call.services, call.brand.id, number), 201)
