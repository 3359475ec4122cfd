"""Which order lines travel in which parcel, and what that makes of each line's status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

UNSHIPPABLE = frozenset({"cancelled", "substituted"})


@dataclass(frozen=True, slots=True)
class ParcelIssue:
    """One reason a set of parcels does not fit the order's lines."""

    parcel: str
    line: str
    kind: Literal["unknown_line", "not_shippable", "exceeds", "before_order", "before_shipping"]
    message: str


def shipped_quantities(parcels: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Sum, per line, the units packed across all parcels."""
    totals: dict[str, int] = {}
    for contents in parcels.values():
        for line, quantity in contents.items():
            totals[line] = totals.get(line, 0) + quantity
    return totals


def check_parcels(
    lines: Mapping[str, tuple[int, str]], parcels: Mapping[str, Mapping[str, int]]
) -> list[ParcelIssue]:
    """List every way `parcels` ({parcel: {line: qty}}) misfits `lines` ({line: (qty, status)})."""
    issues: list[ParcelIssue] = []
    for parcel, contents in parcels.items():
        for line in contents:
            if line not in lines:
                issues.append(
                    ParcelIssue(parcel, line, "unknown_line", "no such line in the order")
                )
            elif lines[line][1] in UNSHIPPABLE:
                issues.append(
                    ParcelIssue(parcel, line, "not_shippable", f"the line is {lines[line][1]}")
                )
    totals = shipped_quantities(parcels)
    for line, shipped in sorted(totals.items()):
        if line in lines and shipped > lines[line][0]:
            parcel = next(p for p, contents in parcels.items() if line in contents)
            issues.append(
                ParcelIssue(
                    parcel,
                    line,
                    "exceeds",
                    f"{shipped} units packed in all parcels but the line holds {lines[line][0]}",
                )
            )
    return issues


TIME_KINDS = frozenset({"before_order", "before_shipping"})
# Brands' clocks drift: a parcel stamped a few minutes before its order is not an error.
CLOCK_SKEW = dt.timedelta(minutes=10)


def check_times(
    placed_at: dt.datetime,
    parcels: Mapping[str, tuple[dt.datetime | None, dt.datetime | None]],
) -> list[ParcelIssue]:
    """List parcels ({ref: (shipped_at, delivered_at)}) dated before their order or shipping.

    For these issues `line` names the offending field.
    """
    issues: list[ParcelIssue] = []
    earliest = placed_at - CLOCK_SKEW
    for ref, (shipped, delivered) in parcels.items():
        for name, value in (("shipped_at", shipped), ("delivered_at", delivered)):
            if value is not None and value < earliest:
                issues.append(
                    ParcelIssue(ref, name, "before_order", "earlier than the order was placed")
                )
        if shipped is not None and delivered is not None and delivered < shipped:
            issues.append(
                ParcelIssue(ref, "delivered_at", "before_shipping", "earlier than it shipped")
            )
    return issues


def effective_status(requested: str, quantity: int, shipped: int, all_delivered: bool) -> str:
    """Return a line's status given the brand's word for it and the parcels it travels in."""
    if requested in UNSHIPPABLE:
        return requested
    if shipped >= quantity:
        return "delivered" if all_delivered else "shipped"
    if requested in {"shipped", "delivered"}:
        # Units were taken back out of parcels: the rest is again waiting to ship.
        return "in_stock"
    return requested


# Statuses of a parcel not yet delivered, and of one the carrier has (and should be scanning).
UNDELIVERED = frozenset({"label_created", "in_transit", "out_for_delivery"})
MOVING = frozenset({"in_transit", "out_for_delivery"})
# Lateness is news for this long: a date passed longer ago, or a stall that began longer ago, is
# not told (a worker down for days still catches up). A parcel that old without a word is stale
# data (an integration that never sends deliveries), and a message about it now would be noise.
LATE_NEWS_WINDOW = dt.timedelta(days=7)


def last_date(promised: dt.date | None, carrier_eta: dt.date | None) -> dt.date | None:
    """The last date the shopper was given for a parcel: the later of the promise and the
    carrier's date (app.storage.late_parcels writes the same in SQL)."""
    dates = [d for d in (promised, carrier_eta) if d is not None]
    return max(dates) if dates else None


@dataclass(frozen=True, slots=True)
class Lateness:
    """Why a parcel is late now.

    `reason` is "overdue" (the last date the shopper was given, promised or the carrier's, has
    passed) or "stalled" (no carrier scan for the brand's stall threshold). `due` is that last
    date (None when the parcel has none); `late_for` is the parcel's marker once this is told.
    """

    reason: Literal["overdue", "stalled"]
    due: dt.date | None
    late_for: dt.date | None


def lateness(
    *,
    status: str,
    promised: dt.date | None,
    carrier_eta: dt.date | None,
    last_move: dt.datetime,
    late_for: dt.date | None,
    late_told_at: dt.datetime | None,
    today: dt.date,
    now: dt.datetime,
    stall_after: dt.timedelta,
) -> Lateness | None:
    """Decide whether a parcel is late news now, given what was already told of it.

    A due date is told once, when the day after it begins (`today` is the brand's date), so a
    carrier date that passes is news again. A stall is told once per last movement, and not at
    all when the shopper was told of a delay (`late_told_at`, by any path) since the parcel last
    moved: they would hear the same thing twice. `last_move` is the newest scan, else when it
    shipped or was added. Neither is told once LATE_NEWS_WINDOW has gone by.
    """
    if status not in UNDELIVERED:
        return None
    due = last_date(promised, carrier_eta)
    if due is not None and today - LATE_NEWS_WINDOW <= due < today and late_for != due:
        return Lateness("overdue", due, due)
    told_since_move = late_told_at is not None and late_told_at >= last_move
    stalled_for = now - last_move
    if status in MOVING and stall_after <= stalled_for <= stall_after + LATE_NEWS_WINDOW:
        return None if told_since_move else Lateness("stalled", due, late_for)
    return None
