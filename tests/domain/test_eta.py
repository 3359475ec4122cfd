"""The ETA core: allocation per backorder type, consolidation, window states and ETA diffs."""

import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.domain.eta import (
    BackorderType,
    BrandPolicy,
    Direction,
    EtaChange,
    ExpectedParcel,
    ExpectedParcelKind,
    Inbound,
    LineEta,
    Queue,
    Reason,
    SkuSupply,
    SupplyKind,
    WaitingLine,
    WindowState,
    allocate,
    consolidate,
    diff_etas,
    widening_days,
    window_end,
    window_state,
)

TODAY = date(2026, 5, 4)
BASE = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
POLICY = BrandPolicy()
PROPERTY = settings(max_examples=200, deadline=None)


def may(day: int) -> date:
    return date(2026, 5, day)


def june(day: int) -> date:
    return date(2026, 6, day)


def waiting(
    line_id: int,
    sku: str,
    quantity: int = 1,
    *,
    days: int = 0,
    kind: BackorderType = BackorderType.STANDARD,
    order_id: int = 1,
    region: str | None = None,
) -> WaitingLine:
    return WaitingLine(line_id, order_id, sku, quantity, BASE + timedelta(days=days), kind, region)


def dated(
    line_id: int,
    queue: Queue,
    position: int,
    available: date,
    reason: Reason,
    ref: str | None = None,
    widen: int = 0,
) -> LineEta:
    """Build the ETA the default policy gives: one handling day, two to five transit days."""
    ship_by = available + timedelta(days=1)
    return LineEta(
        line_id,
        queue,
        position,
        available,
        ship_by,
        ship_by + timedelta(days=2),
        ship_by + timedelta(days=5 + widen),
        reason,
        ref,
        widen,
    )


def undated(line_id: int, queue: Queue, position: int, reason: Reason) -> LineEta:
    return LineEta(line_id, queue, position, None, None, None, None, reason, None)


# One case per backorder type.


def test_standard_lines_take_stock_then_restocks_in_queue_order() -> None:
    supply = SkuSupply(
        "TEE", on_hand=2, inbound=(Inbound("PO-2", 10, may(20)), Inbound("PO-1", 3, may(10)))
    )
    lines = [
        waiting(4, "TEE", 9, days=3),
        waiting(2, "TEE", 4, days=1),
        waiting(1, "TEE", 1, days=0),
        waiting(3, "TEE", 2, days=2),
    ]

    etas = allocate(lines, [supply], POLICY, TODAY)

    assert etas == {
        1: dated(1, Queue.STOCK, 1, TODAY, Reason.IN_STOCK),
        # One unit on hand plus three from PO-1: the line ships complete, when PO-1 lands.
        2: dated(2, Queue.STOCK, 2, may(10), Reason.RESTOCK, "PO-1"),
        3: dated(3, Queue.STOCK, 3, may(20), Reason.RESTOCK, "PO-2"),
        # Eight units are left in PO-2 and the line needs nine.
        4: undated(4, Queue.STOCK, 4, Reason.NO_SUPPLY),
    }
    assert etas[1].ship_by == may(5)
    assert (etas[2].delivery_from, etas[2].delivery_to) == (may(13), may(16))


def test_overdue_inbound_is_dated_today_but_is_not_in_stock() -> None:
    supply = SkuSupply("TEE", inbound=(Inbound("PO-LATE", 5, date(2026, 4, 28)),))

    etas = allocate([waiting(1, "TEE")], [supply], POLICY, TODAY)

    assert etas[1] == dated(1, Queue.STOCK, 1, TODAY, Reason.RESTOCK, "PO-LATE")


def test_preorders_queue_ahead_of_stock_and_wait_for_release() -> None:
    supply = SkuSupply(
        "VINYL",
        release_date=june(1),
        inbound=(Inbound("PO-A", 5, may(20)), Inbound("PO-B", 5, june(15))),
    )
    lines = [
        waiting(10, "VINYL", 2, days=0),
        waiting(11, "VINYL", 3, days=1, kind=BackorderType.PREORDER),
        waiting(12, "VINYL", 3, days=2, kind=BackorderType.PREORDER),
    ]

    etas = allocate(lines, [supply], POLICY, TODAY)

    assert etas == {
        11: dated(11, Queue.PREORDER, 1, june(1), Reason.RELEASE_DATE, "PO-A"),
        12: dated(12, Queue.PREORDER, 2, june(15), Reason.RESTOCK, "PO-B"),
        10: dated(10, Queue.STOCK, 1, june(15), Reason.RESTOCK, "PO-B"),
    }


def test_preorders_share_the_stock_queue_when_the_brand_says_so() -> None:
    supply = SkuSupply(
        "VINYL",
        release_date=june(1),
        inbound=(Inbound("PO-A", 5, may(20)), Inbound("PO-B", 5, june(15))),
    )
    lines = [
        waiting(10, "VINYL", 2, days=0),
        waiting(11, "VINYL", 3, days=1, kind=BackorderType.PREORDER),
        waiting(12, "VINYL", 3, days=2, kind=BackorderType.PREORDER),
    ]
    policy = BrandPolicy(preorders_own_queue=False)

    etas = allocate(lines, [supply], policy, TODAY)

    assert etas == {
        10: dated(10, Queue.STOCK, 1, may(20), Reason.RESTOCK, "PO-A"),
        11: dated(11, Queue.STOCK, 2, june(1), Reason.RELEASE_DATE, "PO-A"),
        12: dated(12, Queue.STOCK, 3, june(15), Reason.RESTOCK, "PO-B"),
    }


def test_preorder_without_supply_gets_no_date_and_released_stock_ships_now() -> None:
    unreleased = SkuSupply("VINYL", release_date=june(1))
    released = SkuSupply("SINGLE", on_hand=1, release_date=date(2026, 4, 1))
    lines = [
        waiting(1, "VINYL", kind=BackorderType.PREORDER),
        waiting(2, "SINGLE", kind=BackorderType.PREORDER),
    ]

    etas = allocate(lines, [unreleased, released], POLICY, TODAY)

    assert etas[1] == undated(1, Queue.PREORDER, 1, Reason.NO_SUPPLY)
    assert etas[2] == dated(2, Queue.PREORDER, 1, TODAY, Reason.IN_STOCK)


def test_custom_lines_are_dated_by_lead_time_and_take_no_stock() -> None:
    boots = SkuSupply("BOOT", on_hand=1, production_lead_days=21)
    capes = SkuSupply("CAPE", on_hand=3)
    lines = [
        waiting(20, "BOOT", 2, days=19, kind=BackorderType.CUSTOM),
        waiting(21, "BOOT", 1, days=0, kind=BackorderType.CUSTOM),
        waiting(22, "BOOT", 1, days=25),
        waiting(23, "CAPE", 1, kind=BackorderType.CUSTOM),
    ]

    etas = allocate(lines, [boots, capes], POLICY, TODAY)

    assert etas == {
        # Ordered 20 April, 21 days to make.
        20: dated(20, Queue.CUSTOM, 2, may(11), Reason.PRODUCTION),
        # Ordered 1 April: 22 April has passed, so the line is due now, not in the past.
        21: dated(21, Queue.CUSTOM, 1, TODAY, Reason.PRODUCTION),
        22: dated(22, Queue.STOCK, 1, TODAY, Reason.IN_STOCK),
        23: undated(23, Queue.CUSTOM, 1, Reason.NO_LEAD_TIME),
    }


def test_dropship_lines_take_vendor_promises_only() -> None:
    supply = SkuSupply(
        "LAMP",
        on_hand=5,
        inbound=(
            Inbound("V-1", 2, may(12), kind=SupplyKind.VENDOR),
            Inbound("V-2", 5, may(8), kind=SupplyKind.VENDOR),
            Inbound("PO-9", 10, may(6)),
        ),
    )
    lines = [
        waiting(30, "LAMP", 4, days=0, kind=BackorderType.DROPSHIP),
        waiting(31, "LAMP", 2, days=1, kind=BackorderType.DROPSHIP),
        waiting(32, "LAMP", 2, days=2, kind=BackorderType.DROPSHIP),
        waiting(33, "LAMP", 5, days=3),
        waiting(34, "LAMP", 1, days=4),
    ]

    etas = allocate(lines, [supply], POLICY, TODAY)

    assert etas == {
        30: dated(30, Queue.DROPSHIP, 1, may(8), Reason.VENDOR_DATE, "V-2"),
        31: dated(31, Queue.DROPSHIP, 2, may(12), Reason.VENDOR_DATE, "V-1"),
        32: undated(32, Queue.DROPSHIP, 3, Reason.NO_SUPPLY),
        33: dated(33, Queue.STOCK, 1, TODAY, Reason.IN_STOCK),
        34: dated(34, Queue.STOCK, 2, may(6), Reason.RESTOCK, "PO-9"),
    }


def test_manufacturer_dates_widen_with_low_confidence() -> None:
    supply = SkuSupply(
        "SOFA",
        on_hand=1,
        inbound=(Inbound("RUN-7", 10, may(18), confidence=0.6, kind=SupplyKind.PRODUCTION),),
    )
    lines = [
        waiting(40, "SOFA", 1, days=0, kind=BackorderType.MANUFACTURER),
        waiting(41, "SOFA", 3, days=1, kind=BackorderType.MANUFACTURER),
        waiting(42, "SOFA", 1, days=2),
    ]

    etas = allocate(lines, [supply], POLICY, TODAY)

    assert etas[40] == dated(40, Queue.STOCK, 1, TODAY, Reason.IN_STOCK)
    assert etas[41] == dated(41, Queue.STOCK, 2, may(18), Reason.MANUFACTURER_DATE, "RUN-7", 4)
    assert (etas[41].ship_by, etas[41].delivery_from, etas[41].delivery_to) == (
        may(19),
        may(21),
        may(28),
    )
    # The same uncertain run behind a standard line widens it too.
    assert etas[42] == dated(42, Queue.STOCK, 3, may(18), Reason.RESTOCK, "RUN-7", 4)


@pytest.mark.parametrize(
    ("confidence", "days"), [(1.0, 0), (0.9, 1), (0.6, 4), (0.25, 8), (0.0, 10)]
)
def test_widening_rounds_half_up(confidence: float, days: int) -> None:
    assert widening_days(confidence, 10) == days


def test_seasonal_lines_wait_for_the_season_or_the_supply() -> None:
    sleds = SkuSupply(
        "SLED", on_hand=2, season_start=june(1), inbound=(Inbound("PO-S", 4, june(10)),)
    )
    skis = SkuSupply("SKI", on_hand=1, season_start=date(2026, 4, 1))
    lines = [
        waiting(50, "SLED", 2, days=0, kind=BackorderType.SEASONAL),
        waiting(51, "SLED", 2, days=1, kind=BackorderType.SEASONAL),
        waiting(52, "SLED", 3, days=2, kind=BackorderType.SEASONAL),
        waiting(53, "SKI", 1, kind=BackorderType.SEASONAL),
    ]

    etas = allocate(lines, [sleds, skis], POLICY, TODAY)

    assert etas == {
        50: dated(50, Queue.STOCK, 1, june(1), Reason.SEASON_START),
        51: dated(51, Queue.STOCK, 2, june(10), Reason.RESTOCK, "PO-S"),
        52: undated(52, Queue.STOCK, 3, Reason.NO_SUPPLY),
        53: dated(53, Queue.STOCK, 1, TODAY, Reason.IN_STOCK),
    }


def test_indefinite_lines_hold_their_place_and_use_real_supply_only() -> None:
    lines = [
        waiting(60, "KITE", 1, days=0, kind=BackorderType.INDEFINITE),
        waiting(61, "KITE", 1, days=1),
    ]

    nothing = allocate(lines, [SkuSupply("KITE")], POLICY, TODAY)
    some = allocate(
        lines, [SkuSupply("KITE", inbound=(Inbound("PO-K", 1, may(30)),))], POLICY, TODAY
    )

    assert nothing == {
        60: undated(60, Queue.STOCK, 1, Reason.NO_CONFIRMED_SUPPLY),
        61: undated(61, Queue.STOCK, 2, Reason.NO_SUPPLY),
    }
    assert some == {
        60: dated(60, Queue.STOCK, 1, may(30), Reason.RESTOCK, "PO-K"),
        61: undated(61, Queue.STOCK, 2, Reason.NO_SUPPLY),
    }


def test_region_transit_overrides_the_default() -> None:
    policy = BrandPolicy(handling_days=2, region_transit_days={"EU": (4, 9)})
    lines = [waiting(1, "TEE", region="EU"), waiting(2, "TEE", days=1, region="XX")]

    etas = allocate(lines, [SkuSupply("TEE", on_hand=2)], policy, TODAY)

    assert (etas[1].ship_by, etas[1].delivery_from, etas[1].delivery_to) == (
        may(6),
        may(10),
        may(15),
    )
    assert (etas[2].delivery_from, etas[2].delivery_to) == (may(8), may(11))


def test_lines_with_the_same_order_time_queue_by_line_id() -> None:
    lines = [waiting(9, "TEE"), waiting(5, "TEE")]

    etas = allocate(lines, [SkuSupply("TEE", on_hand=1)], POLICY, TODAY)

    assert etas[5].reason == Reason.IN_STOCK
    assert etas[9] == undated(9, Queue.STOCK, 2, Reason.NO_SUPPLY)


@pytest.mark.parametrize(
    ("lines", "supplies", "message"),
    [
        ([waiting(1, "TEE"), waiting(1, "MUG")], [], "line ids must be unique"),
        ([waiting(1, "TEE", 0)], [], "line 1: quantity must be positive"),
        ([waiting(1, "TEE", -1, kind=BackorderType.CUSTOM)], [], "quantity must be positive"),
        ([waiting(1, "TEE", kind="backorder")], [], "unknown backorder type"),  # type: ignore[arg-type]
        ([], [SkuSupply("TEE"), SkuSupply("TEE")], "sku TEE: supply given twice"),
    ],
    ids=["duplicate line", "zero units", "negative units", "unknown type", "duplicate sku"],
)
def test_allocate_rejects_inconsistent_input(
    lines: list[WaitingLine], supplies: list[SkuSupply], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        allocate(lines, supplies, POLICY, TODAY)


def test_inputs_reject_impossible_values() -> None:
    with pytest.raises(ValueError, match="confidence"):
        Inbound("PO-1", 1, TODAY, confidence=1.5)
    with pytest.raises(ValueError, match="quantity"):
        Inbound("PO-1", -1, TODAY)
    with pytest.raises(ValueError, match="on_hand"):
        SkuSupply("TEE", on_hand=-2)
    with pytest.raises(ValueError, match="transit"):
        BrandPolicy(region_transit_days={"EU": (5, 2)})
    with pytest.raises(ValueError, match="handling_days"):
        BrandPolicy(handling_days=-1)


# A partial order, and what ships together.


def test_partial_order_splits_into_parcels_arriving_together() -> None:
    supplies = [
        SkuSupply("MUG", on_hand=1),
        SkuSupply("LAMP", inbound=(Inbound("PO-L", 1, may(10)),)),
        SkuSupply("RUG", inbound=(Inbound("PO-R", 1, may(12)),)),
        SkuSupply("VASE", inbound=(Inbound("PO-V", 1, may(16)),)),
        SkuSupply("DESK"),
    ]
    skus = ["MUG", "LAMP", "RUG", "VASE", "DESK"]
    lines = [waiting(70 + n, sku, order_id=7) for n, sku in enumerate(skus)]

    etas = allocate(lines, supplies, POLICY, TODAY)
    parcels = consolidate(etas.values(), POLICY.consolidation_window_days)

    assert parcels == [
        ExpectedParcel("in_stock", ExpectedParcelKind.IN_STOCK, (70,), may(5), may(7), may(10)),
        # Ship-by 11 and 13 May are within three days: one parcel, dated by the later line.
        ExpectedParcel(
            "backorder:71", ExpectedParcelKind.BACKORDER, (71, 72), may(13), may(15), may(18)
        ),
        ExpectedParcel(
            "backorder:73", ExpectedParcelKind.BACKORDER, (73,), may(17), may(19), may(22)
        ),
        ExpectedParcel("undated", ExpectedParcelKind.UNDATED, (74,), None, None, None),
    ]


def test_consolidation_chains_from_the_parcels_first_line() -> None:
    etas = [
        dated(1, Queue.STOCK, 1, may(10), Reason.RESTOCK, "PO-1"),
        dated(2, Queue.STOCK, 1, may(13), Reason.RESTOCK, "PO-2"),
        dated(3, Queue.STOCK, 1, may(14), Reason.RESTOCK, "PO-3"),
        dated(4, Queue.DROPSHIP, 1, may(10), Reason.VENDOR_DATE, "V-1"),
        dated(5, Queue.DROPSHIP, 2, may(10), Reason.VENDOR_DATE, "V-1"),
        dated(6, Queue.STOCK, 1, may(16), Reason.RESTOCK, "PO-4", widen=3),
    ]

    parcels = consolidate(etas, 3)
    shuffled = consolidate(random.Random(4).sample(etas, len(etas)), 3)

    assert [(parcel.key, parcel.line_ids, parcel.ship_by) for parcel in parcels] == [
        ("dropship:V-1", (4, 5), may(11)),
        ("backorder:1", (1, 2), may(14)),
        ("backorder:3", (3, 6), may(17)),
    ]
    # The widened line sets the parcel's late end.
    assert parcels[2].delivery_to == may(25)
    assert shuffled == parcels


def test_consolidation_of_nothing_is_no_parcels() -> None:
    assert consolidate([], 3) == []


# Fulfilment window: ordered 1 April, a 30-day promise ends on 1 May.


def shipping(ship_by: date, widen: int = 0) -> LineEta:
    return dated(1, Queue.STOCK, 1, ship_by - timedelta(days=1), Reason.RESTOCK, widen=widen)


APRIL_20 = date(2026, 4, 20)


@pytest.mark.parametrize(
    ("today", "eta", "shipped", "state"),
    [
        (APRIL_20, shipping(date(2026, 4, 25)), False, WindowState.ON_TRACK),
        (APRIL_20, shipping(may(1)), False, WindowState.ON_TRACK),
        (APRIL_20, shipping(may(2)), False, WindowState.AT_RISK),
        (APRIL_20, shipping(date(2026, 4, 28), widen=4), False, WindowState.AT_RISK),
        (APRIL_20, undated(1, Queue.STOCK, 1, Reason.NO_SUPPLY), False, WindowState.NO_DATE),
        (APRIL_20, None, False, WindowState.NO_DATE),
        (may(1), shipping(may(1)), False, WindowState.ON_TRACK),
        (may(2), shipping(may(3)), False, WindowState.EXPIRED),
        (may(2), None, False, WindowState.EXPIRED),
        (may(10), None, True, WindowState.ON_TRACK),
    ],
    ids=[
        "ships well inside",
        "ships on the last day",
        "ships a day late",
        "widened past the end",
        "no supply",
        "no eta",
        "last day still open",
        "past the end",
        "past the end undated",
        "shipped",
    ],
)
def test_window_state(today: date, eta: LineEta | None, shipped: bool, state: WindowState) -> None:
    assert window_end(BASE, 30) == may(1)
    assert window_state(BASE, 30, eta, today, shipped) == state


# ETA changes worth a message.


def test_diff_ignores_jitter_and_reports_a_real_move() -> None:
    old = [
        dated(1, Queue.STOCK, 1, may(10), Reason.RESTOCK),
        dated(2, Queue.STOCK, 2, may(12), Reason.RESTOCK),
        dated(3, Queue.STOCK, 3, may(14), Reason.RESTOCK),
    ]
    new = [
        dated(1, Queue.STOCK, 1, may(11), Reason.RESTOCK),
        dated(2, Queue.STOCK, 2, may(12), Reason.RESTOCK),
        dated(3, Queue.STOCK, 3, may(19), Reason.RESTOCK),
    ]

    assert diff_etas(old[:2], new[:2], 3) == []
    assert diff_etas(old, new, 3) == [
        EtaChange(3, Direction.LATER, may(15), may(20), (may(17), may(20)), (may(22), may(25)), 5)
    ]


def test_diff_reports_earlier_dates_and_gained_or_lost_dates() -> None:
    old = [
        dated(1, Queue.STOCK, 1, may(20), Reason.RESTOCK),
        undated(2, Queue.STOCK, 2, Reason.NO_SUPPLY),
        dated(3, Queue.STOCK, 3, may(20), Reason.RESTOCK),
        undated(4, Queue.STOCK, 4, Reason.NO_SUPPLY),
        dated(5, Queue.STOCK, 5, may(20), Reason.RESTOCK),
    ]
    new = [
        dated(3, Queue.STOCK, 2, may(17), Reason.RESTOCK),
        undated(1, Queue.STOCK, 1, Reason.NO_SUPPLY),
        dated(2, Queue.STOCK, 1, may(25), Reason.RESTOCK),
        undated(4, Queue.STOCK, 3, Reason.NO_SUPPLY),
        dated(6, Queue.STOCK, 5, may(20), Reason.RESTOCK),
    ]

    changes = diff_etas(old, new, 3)

    assert [(c.line_id, c.direction, c.shift_days) for c in changes] == [
        (1, Direction.LOST_DATE, None),
        (2, Direction.GAINED_DATE, None),
        (3, Direction.EARLIER, -3),
    ]
    assert changes[0].new_delivery is None
    assert changes[1].old_ship_by is None
    assert changes[1].new_delivery == (may(28), may(31))


def test_diff_needs_a_threshold_of_a_day_or_more() -> None:
    with pytest.raises(ValueError, match="threshold_days"):
        diff_etas([], [], 0)


# Properties over random SKUs, orders and supply.

SKUS = ("A", "B", "C")
offsets = st.integers(-5, 40).map(lambda n: TODAY + timedelta(days=n))
inbound_rows = st.builds(
    Inbound,
    ref=st.sampled_from(["P1", "P2", "P3", "V1", "V2"]),
    quantity=st.integers(0, 8),
    expected_date=offsets,
    confidence=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    kind=st.sampled_from(SupplyKind),
)
supply_rows = st.builds(
    SkuSupply,
    sku=st.just(""),
    on_hand=st.integers(0, 6),
    inbound=st.lists(inbound_rows, max_size=4).map(tuple),
    production_lead_days=st.none() | st.integers(0, 30),
    release_date=st.none() | offsets,
    season_start=st.none() | offsets,
)
line_fields = st.tuples(
    st.integers(1, 8),
    st.sampled_from(SKUS),
    st.integers(1, 5),
    st.integers(0, 12),
    st.sampled_from(BackorderType),
    st.sampled_from([None, "EU"]),
)
policies = st.builds(
    BrandPolicy,
    handling_days=st.integers(0, 2),
    preorders_own_queue=st.booleans(),
    region_transit_days=st.just({"EU": (3, 8)}),
)

World = tuple[list[WaitingLine], list[SkuSupply], BrandPolicy]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    supplies = [replace(draw(supply_rows), sku=sku) for sku in SKUS]
    lines = [
        WaitingLine(line_id, order, sku, quantity, BASE + timedelta(hours=hours), kind, region)
        for line_id, (order, sku, quantity, hours, kind, region) in enumerate(
            draw(st.lists(line_fields, max_size=25)), start=1
        )
    ]
    return lines, supplies, draw(policies)


def run(world: World) -> dict[int, LineEta]:
    lines, supplies, policy = world
    return allocate(lines, supplies, policy, TODAY)


def never(day: date | None) -> date:
    """Sort a missing date after every real one."""
    return date.max if day is None else day


def _arrivals(supply: SkuSupply, vendor: bool) -> list[tuple[date, int]]:
    """List (day the units can be used, units) for the warehouse or the vendor side of a SKU."""
    arrivals = [
        (max(row.expected_date, TODAY), row.quantity)
        for row in supply.inbound
        if (row.kind == SupplyKind.VENDOR) == vendor
    ]
    return arrivals if vendor else [(TODAY, supply.on_hand), *arrivals]


@PROPERTY
@given(worlds())
def test_never_promises_more_units_than_arrive_by_any_date(world: World) -> None:
    lines, supplies, _ = world
    etas = run(world)
    sides = {False: (Queue.STOCK, Queue.PREORDER), True: (Queue.DROPSHIP,)}
    for supply in supplies:
        for vendor, queues in sides.items():
            arrivals = _arrivals(supply, vendor)
            served = [
                (eta.available_from, line.quantity)
                for line in lines
                if line.sku == supply.sku
                for eta in [etas[line.line_id]]
                if eta.queue in queues and eta.available_from is not None
            ]
            assert sum(units for _, units in served) <= sum(units for _, units in arrivals)
            for day, _ in served:
                promised = sum(units for when, units in served if when <= day)
                arrived = sum(units for when, units in arrivals if when <= day)
                assert promised <= arrived


@PROPERTY
@given(worlds())
def test_an_earlier_standard_line_is_never_dated_later(world: World) -> None:
    lines, _, _ = world
    etas = run(world)
    for sku in SKUS:
        queue = sorted(
            (
                line
                for line in lines
                if line.sku == sku and line.backorder_type == BackorderType.STANDARD
            ),
            key=lambda line: (line.ordered_at, line.line_id),
        )
        dates = [never(etas[line.line_id].available_from) for line in queue]
        positions = [etas[line.line_id].queue_position for line in queue]
        assert dates == sorted(dates)
        assert positions == sorted(positions)


def _no_line_later(worse: dict[int, LineEta], better: dict[int, LineEta]) -> None:
    """Assert no line is available later with the better supply than with the worse."""
    for line_id, eta in worse.items():
        assert never(better[line_id].available_from) <= never(eta.available_from)
        assert never(better[line_id].ship_by) <= never(eta.ship_by)


def _with_inbound(world: World, sku: str, inbound: tuple[Inbound, ...]) -> World:
    lines, supplies, policy = world
    changed = [replace(s, inbound=inbound) if s.sku == sku else s for s in supplies]
    return lines, changed, policy


@PROPERTY
@given(worlds(), st.sampled_from(SKUS), inbound_rows, st.integers(0, 3))
def test_more_supply_never_delays_and_less_never_hastens_a_line(
    world: World, sku: str, extra: Inbound, more_on_hand: int
) -> None:
    lines, supplies, policy = world
    smaller = run(world)
    grown = [
        replace(s, inbound=(*s.inbound, extra), on_hand=s.on_hand + more_on_hand)
        if s.sku == sku
        else s
        for s in supplies
    ]
    larger = run((lines, grown, policy))
    # Read one way, adding supply never delays; read the other, removing it never hastens.
    _no_line_later(smaller, larger)


@PROPERTY
@given(worlds(), st.sampled_from(SKUS), st.data())
def test_removing_supply_never_hastens_a_line(world: World, sku: str, data: st.DataObject) -> None:
    supply = next(s for s in world[1] if s.sku == sku)
    assume(supply.inbound)
    index = data.draw(st.integers(0, len(supply.inbound) - 1))
    fewer = supply.inbound[:index] + supply.inbound[index + 1 :]
    _no_line_later(run(_with_inbound(world, sku, fewer)), run(world))


@PROPERTY
@given(worlds(), st.sampled_from(SKUS), st.data(), st.integers(1, 20))
def test_an_earlier_supply_date_never_delays_and_a_later_one_never_hastens(
    world: World, sku: str, data: st.DataObject, days: int
) -> None:
    supply = next(s for s in world[1] if s.sku == sku)
    assume(supply.inbound)
    index = data.draw(st.integers(0, len(supply.inbound) - 1))
    row = supply.inbound[index]

    def moved(by: int) -> World:
        shifted = replace(row, expected_date=row.expected_date + timedelta(days=by))
        rows = (*supply.inbound[:index], shifted, *supply.inbound[index + 1 :])
        return _with_inbound(world, sku, rows)

    now = run(world)
    _no_line_later(now, run(moved(-days)))
    _no_line_later(run(moved(days)), now)


@PROPERTY
@given(worlds(), st.randoms(use_true_random=False))
def test_same_input_gives_same_output_whatever_its_order(world: World, rnd: random.Random) -> None:
    lines, supplies, policy = world
    first = run(world)
    shuffled_supplies = [
        replace(s, inbound=tuple(rnd.sample(s.inbound, len(s.inbound))))
        for s in rnd.sample(supplies, len(supplies))
    ]
    second = run((rnd.sample(lines, len(lines)), shuffled_supplies, policy))
    assert first == second
    assert list(first.items()) == list(second.items())
    assert first == run(world)


@PROPERTY
@given(worlds())
def test_consolidation_puts_each_line_in_exactly_one_parcel(world: World) -> None:
    lines, _, policy = world
    etas = run(world)
    for order in {line.order_id for line in lines}:
        mine = [etas[line.line_id] for line in lines if line.order_id == order]
        parcels = consolidate(mine, policy.consolidation_window_days)
        placed = sorted(line_id for parcel in parcels for line_id in parcel.line_ids)
        assert placed == sorted(eta.line_id for eta in mine)
        for parcel in parcels:
            members = [eta for eta in mine if eta.line_id in parcel.line_ids]
            days = [eta.ship_by for eta in members if eta.ship_by is not None]
            if parcel.kind == ExpectedParcelKind.BACKORDER:
                assert (max(days) - min(days)).days <= policy.consolidation_window_days
            assert parcel.ship_by == max(days, default=None)


@PROPERTY
@given(worlds())
def test_diff_of_an_unchanged_allocation_is_empty(world: World) -> None:
    etas = run(world)
    assert diff_etas(etas.values(), run(world).values(), 1) == []
