"""What the tracking page shows, worked out from an order: plain data, no I/O, no HTML.

The shopper must see at a glance what arrived, what is on its way in which parcel, what still
waits and until when, and what they can do about it. Nothing personal is carried here: no
email, phone or street address; the destination is the city and the postal code's first part.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from app.api.models import LineOut, OrderOut, ShipmentOut
from app.domain.parcels import MOVING as WITH_CARRIER
from app.domain.parcels import UNDELIVERED, last_date

# Parcel states in which the parcel is still travelling towards the shopper.
MOVING = UNDELIVERED
TROUBLE = frozenset({"exception", "returned", "lost"})


@dataclass(frozen=True)
class Item:
    ref: str
    title: str
    image_url: str | None
    quantity: int
    unit_price: int


@dataclass(frozen=True)
class Scan:
    when: dt.datetime
    status: str
    description: str
    place: str | None


@dataclass(frozen=True)
class Parcel:
    number: int  # in the order the parcels left, so messages and page agree
    ref: str
    carrier: str
    tracking_number: str
    tracking_url: str | None
    status: str
    promised_date: dt.date | None
    carrier_eta: dt.date | None
    delivered_at: dt.datetime | None
    delayed: bool
    scans: list[Scan]  # newest first
    items: list[Item]
    shipped_at: dt.datetime | None = None

    @property
    def moving(self) -> bool:
        return self.status in MOVING

    @property
    def trouble(self) -> bool:
        return self.status in TROUBLE

    def quiet_since(
        self, today: dt.date, timezone: dt.tzinfo, stall_after_days: int
    ) -> dt.date | None:
        """The day of the last news from the carrier (its newest scan, else the day it shipped),
        when the parcel is with the carrier and that was `stall_after_days` or more days ago.

        Whole days, so the page changes only when the day does (its cache and validators are
        per day); the shopper's message (app.storage.late_parcels) goes by the hour, within it.
        """
        moved = self.scans[0].when if self.scans else self.shipped_at
        if self.status not in WITH_CARRIER or moved is None:
            return None
        day = moved.astimezone(timezone).date()
        return day if (today - day).days >= stall_after_days else None

    def late_on(self, today: dt.date) -> dt.date | None:
        """The last date given (promised, or the carrier's if later), when it passed undelivered."""
        due = last_date(self.promised_date, self.carrier_eta)
        return due if self.status in MOVING and due is not None and due < today else None


@dataclass(frozen=True)
class Waiting:
    """A line (or what is left of it) waiting for supply."""

    item: Item
    backorder_type: str
    reason: str
    queue_position: int | None
    available_from: dt.date | None
    ship_by: dt.date | None
    delivery_from: dt.date | None
    delivery_to: dt.date | None
    window_state: str

    @property
    def within_promise(self) -> bool | None:
        """Whether it should ship inside the brand's promise (None when there is no date)."""
        if self.window_state in ("on_track",):
            return True
        if self.window_state in ("at_risk", "expired"):
            return False
        return None


@dataclass(frozen=True)
class Group:
    """Waiting lines expected to leave together."""

    key: str
    kind: str
    lines: list[Waiting]
    ship_by: dt.date | None
    delivery_from: dt.date | None
    delivery_to: dt.date | None

    @property
    def together(self) -> bool:
        return len(self.lines) > 1


@dataclass(frozen=True)
class Alternative:
    sku: str
    title: str
    image_url: str | None
    unit_price: int | None


@dataclass(frozen=True)
class Choice:
    id: int
    line: Item
    reason: str
    state: str
    deadline: dt.datetime
    default_action: str
    decision: str | None
    alternative_sku: str | None
    alternatives: list[Alternative]

    @property
    def open(self) -> bool:
        # A choice waiting for a person is still the shopper's to make until the deadline.
        return self.state in {"open", "needs_person"}


@dataclass(frozen=True)
class Summary:
    items: int
    delivered: int
    parcels_moving: int
    waiting: int
    preparing: int
    closed: int


@dataclass(frozen=True)
class TrackingView:
    number: str
    placed_at: dt.datetime
    currency: str
    version: int
    destination: str | None
    summary: Summary
    parcels: list[Parcel]
    groups: list[Group]
    preparing: list[Item]
    closed: list[tuple[Item, str]]
    choices: list[Choice] = field(default_factory=list)
    window_end: dt.date | None = None


def _item(line: LineOut, quantity: int | None = None) -> Item:
    return Item(
        line.ref,
        line.title,
        line.image_url,
        line.quantity if quantity is None else quantity,
        line.unit_price,
    )


def destination(city: str | None, postal_code: str | None) -> str | None:
    """Say where the order goes without an address: the city and the postal code's first part."""
    prefix = None
    if postal_code:
        compact = postal_code.replace(" ", "")
        prefix = compact[:3] + "…" if len(compact) > 3 else compact
    parts = [part for part in (city, prefix) if part]
    return " ".join(parts) if parts else None


def _parcel(number: int, shipment: ShipmentOut, lines: dict[str, LineOut]) -> Parcel:
    return Parcel(
        number=number,
        ref=shipment.ref,
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
        tracking_url=shipment.tracking_url,
        status=shipment.status,
        promised_date=shipment.promised_date,
        carrier_eta=shipment.carrier_eta,
        delivered_at=shipment.delivered_at,
        delayed=shipment.delayed,
        shipped_at=shipment.shipped_at,
        scans=[
            Scan(
                scan.occurred_at,
                scan.status,
                scan.description,
                ", ".join(part for part in (scan.city, scan.region, scan.country) if part) or None,
            )
            for scan in shipment.checkpoints
        ],
        items=[
            _item(lines[content.line], content.quantity)
            for content in shipment.lines
            if content.line in lines
        ],
    )


def build_view(order: OrderOut, choices: list[Choice] | None = None) -> TrackingView:
    """Work out everything the tracking page shows for an order."""
    lines = {line.ref: line for line in order.lines}
    far_future = dt.datetime.max.replace(tzinfo=dt.UTC)
    by_departure = sorted(order.shipments, key=lambda s: (s.shipped_at or far_future, s.ref))
    parcels = [_parcel(n, shipment, lines) for n, shipment in enumerate(by_departure, start=1)]
    # Delivered parcels last: what is still coming matters most.
    parcels.sort(key=lambda p: (p.status == "delivered", p.number))

    waiting: dict[str, Waiting] = {}
    preparing: list[Item] = []
    closed: list[tuple[Item, str]] = []
    for line in order.lines:
        left = line.quantity - line.shipped_quantity
        if line.status in ("cancelled", "substituted"):
            closed.append((_item(line), line.status))
        elif line.status == "backordered" and left > 0:
            eta = line.eta
            waiting[line.ref] = Waiting(
                item=_item(line, left),
                backorder_type=line.backorder_type or "standard",
                reason=eta.reason if eta else "no_supply",
                queue_position=eta.queue_position if eta else None,
                available_from=eta.available_from if eta else None,
                ship_by=eta.ship_by if eta else None,
                delivery_from=eta.delivery.earliest if eta and eta.delivery else None,
                delivery_to=eta.delivery.latest if eta and eta.delivery else None,
                window_state=eta.window_state if eta else "no_date",
            )
        elif line.status == "in_stock" and left > 0:
            preparing.append(_item(line, left))

    groups: list[Group] = []
    grouped: set[str] = set()
    for expected in order.expected_parcels:
        members = [waiting[ref] for ref in expected.lines if ref in waiting]
        if not members:
            continue
        grouped.update(expected.lines)
        groups.append(
            Group(
                key=expected.key,
                kind=expected.kind,
                lines=members,
                ship_by=expected.ship_by,
                delivery_from=expected.delivery.earliest if expected.delivery else None,
                delivery_to=expected.delivery.latest if expected.delivery else None,
            )
        )
    for ref, alone in waiting.items():
        if ref not in grouped:
            groups.append(Group(f"line:{ref}", "undated", [alone], None, None, None))

    delivered = sum(item.quantity for p in parcels if p.status == "delivered" for item in p.items)
    summary = Summary(
        items=sum(
            line.quantity for line in order.lines if line.status not in ("cancelled", "substituted")
        ),
        delivered=delivered,
        parcels_moving=sum(1 for p in parcels if p.moving),
        waiting=sum(w.item.quantity for w in waiting.values()),
        preparing=sum(item.quantity for item in preparing),
        closed=len(closed),
    )
    return TrackingView(
        number=order.number,
        placed_at=order.placed_at,
        currency=order.currency,
        version=order.version,
        destination=destination(order.shipping.get("city"), order.shipping.get("postal_code")),
        summary=summary,
        parcels=parcels,
        groups=groups,
        preparing=preparing,
        closed=closed,
        choices=choices or [],
        window_end=order.window_end,
    )
