"""Date waiting backorder lines from stock and inbound supply: the pure core of the ETA engine.

Rules, per SKU (each function's docstring gives the details of the rules it applies):

- Queues: standard, manufacturer, seasonal and indefinite lines share the *stock* queue, served
  from on-hand units, then purchase-order and production inbound in expected-date order (ties by
  ref). Pre-orders form their own queue that takes those same units *ahead of* the stock queue
  (or join the stock queue when the brand turns ``preorders_own_queue`` off). Drop-ship lines
  queue for vendor inbound only; custom lines are made per order and take no stock.
- Order: oldest ``ordered_at`` first, ties by ``line_id``, strictly first come first served: a
  small later line never jumps a large earlier one, so an earlier line is never dated later.
- A line ships complete, on the date of the supply that completes it; never more is allocated than
  exists. No supply, no date: a release or season date alone is not a promise.
- Dates never precede ``today`` (calendar days throughout): ship-by is available-from plus
  handling, delivery is ship-by plus the region's transit, and the late end grows by
  ``round((1 - confidence) * K)`` days, half up, for the supply that completes the line, whatever
  the line's type (K is ``BrandPolicy.confidence_widening_days``, default 10).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from operator import attrgetter


class BackorderType(StrEnum):
    """Why a line waits; it decides which queue the line joins and where its date comes from."""

    STANDARD = "standard"
    PREORDER = "preorder"
    CUSTOM = "custom"
    DROPSHIP = "dropship"
    MANUFACTURER = "manufacturer"
    SEASONAL = "seasonal"
    INDEFINITE = "indefinite"


class SupplyKind(StrEnum):
    """Where inbound units come from; vendor units ship from the vendor, not our warehouse."""

    PURCHASE_ORDER = "purchase_order"
    PRODUCTION = "production"
    VENDOR = "vendor"


class Queue(StrEnum):
    """The line a waiting line stands in; positions count from 1 within it, per SKU."""

    STOCK = "stock"
    PREORDER = "preorder"
    DROPSHIP = "dropship"
    CUSTOM = "custom"


class Reason(StrEnum):
    """What decides a line's date, or why it has none; the page words the ETA from it."""

    IN_STOCK = "in_stock"
    RESTOCK = "restock"
    RELEASE_DATE = "release_date"
    PRODUCTION = "production"
    VENDOR_DATE = "vendor_date"
    MANUFACTURER_DATE = "manufacturer_date"
    SEASON_START = "season_start"
    NO_SUPPLY = "no_supply"
    NO_CONFIRMED_SUPPLY = "no_confirmed_supply"
    NO_LEAD_TIME = "no_lead_time"


class WindowState(StrEnum):
    """Where a line stands against the brand's fulfilment window."""

    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    NO_DATE = "no_date"
    EXPIRED = "expired"


class Direction(StrEnum):
    """How a line's ETA changed."""

    LATER = "later"
    EARLIER = "earlier"
    GAINED_DATE = "gained_date"
    LOST_DATE = "lost_date"


class ExpectedParcelKind(StrEnum):
    """What an expected parcel holds: stock shipping now, backorders, vendor items, or undated."""

    IN_STOCK = "in_stock"
    BACKORDER = "backorder"
    DROPSHIP = "dropship"
    UNDATED = "undated"


@dataclass(frozen=True, slots=True)
class BrandPolicy:
    """A brand's fulfilment settings; all durations are calendar days."""

    handling_days: int = 1
    transit_days: tuple[int, int] = (2, 5)
    region_transit_days: Mapping[str, tuple[int, int]] = field(default_factory=dict, hash=False)
    consolidation_window_days: int = 3
    fulfillment_window_days: int = 30
    preorders_own_queue: bool = True
    confidence_widening_days: int = 10

    def __post_init__(self) -> None:
        for name in (
            "handling_days",
            "consolidation_window_days",
            "fulfillment_window_days",
            "confidence_widening_days",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for low, high in (self.transit_days, *self.region_transit_days.values()):
            if not 0 <= low <= high:
                raise ValueError(f"transit days must satisfy 0 <= min <= max, got {(low, high)}")
        # A private copy: the caller's dict changing later must not change a frozen policy.
        object.__setattr__(self, "region_transit_days", dict(self.region_transit_days))

    def transit_for(self, region: str | None) -> tuple[int, int]:
        """Return the (min, max) transit days to a shipping region."""
        if region is None:
            return self.transit_days
        return self.region_transit_days.get(region, self.transit_days)


@dataclass(frozen=True, slots=True)
class Inbound:
    """Units of a SKU still to arrive (not yet received) from a PO, production run or vendor."""

    ref: str
    quantity: int
    expected_date: date
    confidence: float = 1.0
    kind: SupplyKind = SupplyKind.PURCHASE_ORDER

    def __post_init__(self) -> None:
        if self.quantity < 0:
            raise ValueError(f"inbound {self.ref}: quantity must not be negative")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"inbound {self.ref}: confidence must be within 0..1")


@dataclass(frozen=True, slots=True)
class SkuSupply:
    """What one SKU has now and has coming; on_hand counts units not yet allocated."""

    sku: str
    on_hand: int = 0
    inbound: tuple[Inbound, ...] = ()
    production_lead_days: int | None = None
    release_date: date | None = None
    season_start: date | None = None

    def __post_init__(self) -> None:
        if self.on_hand < 0:
            raise ValueError(f"sku {self.sku}: on_hand must not be negative")
        if self.production_lead_days is not None and self.production_lead_days < 0:
            raise ValueError(f"sku {self.sku}: production_lead_days must not be negative")


@dataclass(frozen=True, slots=True)
class WaitingLine:
    """An order line still waiting for ``quantity`` units (allocate checks it is positive).

    ``ordered_at`` is timezone-aware UTC; ``backorder_type`` may also be the plain string value.
    """

    line_id: int
    order_id: int
    sku: str
    quantity: int
    ordered_at: datetime
    backorder_type: BackorderType = BackorderType.STANDARD
    shipping_region: str | None = None


@dataclass(slots=True)
class LineEta:
    """Where a waiting line stands: its place in line and, when supply covers it, its dates."""

    line_id: int
    queue: Queue
    queue_position: int
    available_from: date | None
    ship_by: date | None
    delivery_from: date | None
    delivery_to: date | None
    reason: Reason
    supply_ref: str | None
    widening_days: int = 0


@dataclass(slots=True)
class ExpectedParcel:
    """Lines of one order expected to leave together, dated by the latest of them."""

    key: str
    kind: ExpectedParcelKind
    line_ids: tuple[int, ...]
    ship_by: date | None
    delivery_from: date | None
    delivery_to: date | None


@dataclass(slots=True)
class EtaChange:
    """A change in a line's ETA worth telling the shopper about."""

    line_id: int
    direction: Direction
    old_ship_by: date | None
    new_ship_by: date | None
    old_delivery: tuple[date, date] | None
    new_delivery: tuple[date, date] | None
    shift_days: int | None


# (available date, units, ref, widening days, reason); on-hand stock has ref None.
_Supply = tuple[date, int, str | None, int, Reason]

_QUEUE_INDEX = {
    BackorderType.PREORDER: 0,
    BackorderType.STANDARD: 1,
    BackorderType.MANUFACTURER: 1,
    BackorderType.SEASONAL: 1,
    BackorderType.INDEFINITE: 1,
    BackorderType.DROPSHIP: 2,
    BackorderType.CUSTOM: 3,
}
_QUEUE_ORDER = attrgetter("ordered_at", "line_id")
_NO_SUPPLY = SkuSupply(sku="")
_UNDATED = (None, None, None, None)


def widening_days(confidence: float, k: int) -> int:
    """Return the days to add to a range's late end for a supply of this confidence."""
    return int((1.0 - confidence) * k + 0.5)


def allocate(
    lines: Iterable[WaitingLine],
    supplies: Iterable[SkuSupply],
    policy: BrandPolicy,
    today: date,
) -> dict[int, LineEta]:
    """Date every waiting line from its SKU's supply and return the ETAs keyed by line id.

    Per type: standard lines take the restock date; pre-orders the later of release date and
    supply date; manufacturer lines the supplier's date (reason ``manufacturer_date``); seasonal
    lines the later of season start and supply date; drop-ship lines the vendor inbound covering
    them; custom lines ``ordered_at`` plus the SKU's production lead time (at least today);
    indefinite lines keep their place in the stock queue and get a date only if real supply
    covers them (else ``no_confirmed_supply``). The result is built in SKU, queue and position
    order, so it does not depend on the order of ``lines``.
    """
    by_sku: dict[str, SkuSupply] = {}
    for supply in supplies:
        if supply.sku in by_sku:
            raise ValueError(f"sku {supply.sku}: supply given twice")
        by_sku[supply.sku] = supply

    preorder_index = 0 if policy.preorders_own_queue else 1
    queue_index = {**_QUEUE_INDEX, BackorderType.PREORDER: preorder_index}
    queues: dict[str, tuple[list[WaitingLine], ...]] = {}
    count = 0
    for line in lines:
        count += 1
        index = queue_index.get(line.backorder_type)
        if index is None:
            raise ValueError(f"line {line.line_id}: unknown backorder type {line.backorder_type!r}")
        buckets = queues.get(line.sku)
        if buckets is None:
            buckets = queues[line.sku] = ([], [], [], [])
        buckets[index].append(line)

    out: dict[int, LineEta] = {}
    for sku in sorted(queues):
        preorders, stock, dropship, custom = queues[sku]
        supply = by_sku.get(sku, _NO_SUPPLY)
        if preorders or stock:
            pool = _stock_pool(supply, policy, today)
            cursor = (0, pool[0][1] if pool else 0)
            if preorders:
                preorders.sort(key=_QUEUE_ORDER)
                cursor = _serve(preorders, Queue.PREORDER, pool, cursor, supply, policy, today, out)
            if stock:
                stock.sort(key=_QUEUE_ORDER)
                _serve(stock, Queue.STOCK, pool, cursor, supply, policy, today, out)
        if dropship:
            pool = _vendor_pool(supply, policy, today)
            dropship.sort(key=_QUEUE_ORDER)
            cursor = (0, pool[0][1] if pool else 0)
            _serve(dropship, Queue.DROPSHIP, pool, cursor, supply, policy, today, out)
        if custom:
            custom.sort(key=_QUEUE_ORDER)
            _make_to_order(custom, supply, policy, today, out)

    if len(out) != count:
        raise ValueError("line ids must be unique")
    return out


def _inbound_pool(inbound: Iterable[Inbound], reason: Reason, k: int, today: date) -> list[_Supply]:
    """Turn inbound rows into supply entries in serving order, overdue ones dated today."""
    rows = sorted(
        (row for row in inbound if row.quantity > 0),
        key=attrgetter("expected_date", "ref", "quantity", "confidence"),
    )
    return [
        (
            max(row.expected_date, today),
            row.quantity,
            row.ref,
            widening_days(row.confidence, k),
            reason,
        )
        for row in rows
    ]


def _stock_pool(supply: SkuSupply, policy: BrandPolicy, today: date) -> list[_Supply]:
    """List the SKU's warehouse supply: on-hand units first, then PO and production inbound."""
    inbound = (row for row in supply.inbound if row.kind != SupplyKind.VENDOR)
    pool = _inbound_pool(inbound, Reason.RESTOCK, policy.confidence_widening_days, today)
    if supply.on_hand > 0:
        pool.insert(0, (today, supply.on_hand, None, 0, Reason.IN_STOCK))
    return pool


def _vendor_pool(supply: SkuSupply, policy: BrandPolicy, today: date) -> list[_Supply]:
    """List the SKU's vendor promises, which only drop-ship lines can take."""
    inbound = (row for row in supply.inbound if row.kind == SupplyKind.VENDOR)
    return _inbound_pool(inbound, Reason.VENDOR_DATE, policy.confidence_widening_days, today)


def _serve(
    lines: list[WaitingLine],
    queue: Queue,
    pool: list[_Supply],
    cursor: tuple[int, int],
    supply: SkuSupply,
    policy: BrandPolicy,
    today: date,
    out: dict[int, LineEta],
) -> tuple[int, int]:
    """Serve a sorted queue from the pool at cursor (entry, units left); return the new cursor."""
    index, left = cursor
    size = len(pool)
    release = supply.release_date
    if release is not None and release <= today:
        release = None
    season = supply.season_start
    if season is not None and season <= today:
        season = None
    handling = timedelta(days=policy.handling_days)
    default_transit = policy.transit_days
    transits = policy.region_transit_days
    # Locals, not class attributes: this loop runs once per waiting line.
    standard, indefinite = BackorderType.STANDARD, BackorderType.INDEFINITE
    manufacturer, preorder, seasonal = (
        BackorderType.MANUFACTURER,
        BackorderType.PREORDER,
        BackorderType.SEASONAL,
    )
    restock, no_supply, no_confirmed = Reason.RESTOCK, Reason.NO_SUPPLY, Reason.NO_CONFIRMED_SUPPLY
    # Lines completed by the same supply share dates: cache them per region for that stretch.
    dates: dict[str | None, tuple[date, date, date]] = {}
    cached_date: date | None = None
    cached_widen = 0
    position = 0
    for line in lines:
        position += 1
        need = line.quantity
        if need <= 0:
            raise ValueError(f"line {line.line_id}: quantity must be positive")
        entry: _Supply | None = None
        while index < size:
            if need <= left:
                left -= need
                entry = pool[index]
                if left == 0:
                    index += 1
                    left = pool[index][1] if index < size else 0
                break
            need -= left
            index += 1
            left = pool[index][1] if index < size else 0

        kind = line.backorder_type
        if entry is None:
            reason = no_confirmed if kind == indefinite else no_supply
            out[line.line_id] = LineEta(line.line_id, queue, position, *_UNDATED, reason, None)
            continue

        available, _, ref, widen, reason = entry
        if kind == standard:
            pass
        elif kind == manufacturer:
            if reason == restock:
                reason = Reason.MANUFACTURER_DATE
        elif kind == preorder and release is not None and release >= available:
            available, reason = release, Reason.RELEASE_DATE
        elif kind == seasonal and season is not None and season >= available:
            available, reason = season, Reason.SEASON_START

        if available is not cached_date or widen != cached_widen:
            cached_date, cached_widen = available, widen
            dates = {}
        region = line.shipping_region
        found = dates.get(region)
        if found is None:
            low, high = default_transit if region is None else transits.get(region, default_transit)
            ship_by = available + handling
            found = dates[region] = (
                ship_by,
                ship_by + timedelta(days=low),
                ship_by + timedelta(days=high + widen),
            )
        out[line.line_id] = LineEta(
            line.line_id,
            queue,
            position,
            available,
            found[0],
            found[1],
            found[2],
            reason,
            ref,
            widen,
        )
    return index, left


def _make_to_order(
    lines: list[WaitingLine],
    supply: SkuSupply,
    policy: BrandPolicy,
    today: date,
    out: dict[int, LineEta],
) -> None:
    """Date custom lines from their order date plus the production lead time."""
    lead = supply.production_lead_days
    handling = timedelta(days=policy.handling_days)
    for position, line in enumerate(lines, start=1):
        if line.quantity <= 0:
            raise ValueError(f"line {line.line_id}: quantity must be positive")
        eta = LineEta(line.line_id, Queue.CUSTOM, position, *_UNDATED, Reason.NO_LEAD_TIME, None)
        if lead is not None:
            eta.available_from = max(today, line.ordered_at.date() + timedelta(days=lead))
            eta.ship_by = eta.available_from + handling
            low, high = policy.transit_for(line.shipping_region)
            eta.delivery_from = eta.ship_by + timedelta(days=low)
            eta.delivery_to = eta.ship_by + timedelta(days=high)
            eta.reason = Reason.PRODUCTION
        out[line.line_id] = eta


def consolidate(etas: Iterable[LineEta], window_days: int) -> list[ExpectedParcel]:
    """Group one order's lines into the parcels the shopper should expect.

    In-stock lines leave now as one parcel. Backordered warehouse lines are chained by ship-by
    date: a parcel takes lines until one is more than ``window_days`` after the parcel's earliest
    line, and is dated by its latest line. Drop-ship lines come from a vendor, so they group only
    with lines on the same vendor supply. Undated lines form one parcel. Keys name the kind and
    the parcel's lowest line id (or vendor ref), so they survive unrelated changes. Parcels come
    in-stock first, then by ship-by date, then undated.
    """
    if window_days < 0:
        raise ValueError("window_days must not be negative")
    in_stock: list[LineEta] = []
    backordered: list[tuple[date, int, LineEta]] = []
    vendor: dict[str | None, list[LineEta]] = {}
    undated: list[LineEta] = []
    for eta in etas:
        if eta.ship_by is None:
            undated.append(eta)
        elif eta.reason == Reason.IN_STOCK:
            in_stock.append(eta)
        elif eta.queue == Queue.DROPSHIP:
            vendor.setdefault(eta.supply_ref, []).append(eta)
        else:
            backordered.append((eta.ship_by, eta.line_id, eta))

    dated = [
        _parcel(f"dropship:{ref}", ExpectedParcelKind.DROPSHIP, group)
        for ref, group in vendor.items()
    ]
    backordered.sort(key=lambda item: item[:2])
    window = timedelta(days=window_days)
    chain: list[LineEta] = []
    opened = date.min
    for ship_by, _, eta in backordered:
        if chain and ship_by - opened > window:
            dated.append(_backorder_parcel(chain))
            chain = []
        if not chain:
            opened = ship_by
        chain.append(eta)
    if chain:
        dated.append(_backorder_parcel(chain))
    dated.sort(key=lambda parcel: (parcel.ship_by or date.min, parcel.key))

    parcels = [_parcel("in_stock", ExpectedParcelKind.IN_STOCK, in_stock)] if in_stock else []
    parcels.extend(dated)
    if undated:
        parcels.append(_parcel("undated", ExpectedParcelKind.UNDATED, undated))
    return parcels


def _backorder_parcel(lines: list[LineEta]) -> ExpectedParcel:
    """Build a backorder parcel keyed by its lowest line id."""
    first = min(eta.line_id for eta in lines)
    return _parcel(f"backorder:{first}", ExpectedParcelKind.BACKORDER, lines)


def _parcel(key: str, kind: ExpectedParcelKind, lines: list[LineEta]) -> ExpectedParcel:
    """Build a parcel dated by the latest of its lines."""
    ids = tuple(sorted(eta.line_id for eta in lines))
    ship_by = [eta.ship_by for eta in lines if eta.ship_by is not None]
    starts = [eta.delivery_from for eta in lines if eta.delivery_from is not None]
    ends = [eta.delivery_to for eta in lines if eta.delivery_to is not None]
    return ExpectedParcel(
        key,
        kind,
        ids,
        max(ship_by, default=None),
        max(starts, default=None),
        max(ends, default=None),
    )


def window_end(ordered_at: datetime, fulfillment_window_days: int) -> date:
    """Return the last day of the brand's promise for an order."""
    return ordered_at.date() + timedelta(days=fulfillment_window_days)


def window_state(
    ordered_at: datetime,
    fulfillment_window_days: int,
    eta: LineEta | None,
    today: date,
    shipped: bool,
) -> WindowState:
    """Classify a line against the brand's fulfilment window.

    A shipped line is on track. An unshipped line is expired once ``today`` is past the window's
    last day (the last day itself still counts), whatever its ETA. Otherwise it has no date, or
    is at risk when it could leave the warehouse after the last day: the window is a promise to
    ship, so the test is ship-by plus the low-confidence widening, not the carrier's transit.
    """
    if shipped:
        return WindowState.ON_TRACK
    last_day = window_end(ordered_at, fulfillment_window_days)
    if today > last_day:
        return WindowState.EXPIRED
    if eta is None or eta.ship_by is None:
        return WindowState.NO_DATE
    if eta.ship_by + timedelta(days=eta.widening_days) > last_day:
        return WindowState.AT_RISK
    return WindowState.ON_TRACK


def diff_etas(
    old: Iterable[LineEta], new: Iterable[LineEta], threshold_days: int
) -> list[EtaChange]:
    """List the ETA changes worth a message, by line id.

    A line counts when its ship-by date moved by at least ``threshold_days`` either way, or when
    it gained or lost a date. Lines present in only one side (new, shipped or cancelled lines)
    are not ETA changes and are left out.
    """
    if threshold_days < 1:
        raise ValueError("threshold_days must be at least 1")
    before = {eta.line_id: eta for eta in old}
    changes: list[EtaChange] = []
    for eta in sorted(new, key=attrgetter("line_id")):
        prior = before.get(eta.line_id)
        if prior is None:
            continue
        if prior.ship_by is None and eta.ship_by is None:
            continue
        shift: int | None = None
        if prior.ship_by is None:
            direction = Direction.GAINED_DATE
        elif eta.ship_by is None:
            direction = Direction.LOST_DATE
        else:
            shift = (eta.ship_by - prior.ship_by).days
            if abs(shift) < threshold_days:
                continue
            direction = Direction.LATER if shift > 0 else Direction.EARLIER
        changes.append(
            EtaChange(
                eta.line_id,
                direction,
                prior.ship_by,
                eta.ship_by,
                _delivery(prior),
                _delivery(eta),
                shift,
            )
        )
    return changes


def _delivery(eta: LineEta) -> tuple[date, date] | None:
    """Return a line's delivery range, if it has one."""
    if eta.delivery_from is None or eta.delivery_to is None:
        return None
    return eta.delivery_from, eta.delivery_to
