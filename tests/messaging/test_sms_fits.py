"""Every shipped SMS, in every locale, with long realistic data, fits in two segments.

Realistic data: a 20-character brand name, the short link on a 23-character public host with
its 12-character code, the opt-out line of a first SMS and the short ref of a shopper with
several orders open. A stress test adds a 25-character brand, a longer host and two more
updates. Arabic is UCS-2, with 134 code units in two segments: the brand, the short link and
the opt-out line take 88, which leaves 46 for the news. Most first Arabic SMS need a third
segment (`ARABIC_FIRST_OVER`), as do a few later ones (`ARABIC_LATER_OVER`); the tests pin
both lists, so a list that is no longer true fails.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest

from app.i18n import LOCALES
from messaging.context import MessageContext
from messaging.render import MessageRenderer, RenderedSms
from messaging.segments import count_segments, normalize_sms
from tests.messaging.test_render import CODE, SMS_URL, build_context, news_data

BRAND = "Northwind Outfitters"  # 20 characters
LONG_BRAND = "Northwind Outfitters Ltd."  # 25 characters
LONG_SMS_URL = "https://track.northwind-outfitters.com/s/" + CODE  # a 30-character host
GSM_LOCALES = [locale for locale in LOCALES if locale != "ar"]
TYPOGRAPHY = "\u00a0\u202f\u2009\u2018\u2019\u201c\u201d\u2013\u2014\u2026"


def undated(ctx: MessageContext) -> MessageContext:
    """Take the dates off the backordered lines (no confirmed supply yet)."""
    lines = tuple(
        dataclasses.replace(line, ship_by=None, delivery_from=None, delivery_to=None)
        if line.status == "backordered"
        else line
        for line in ctx.order.lines
    )
    return dataclasses.replace(ctx, order=dataclasses.replace(ctx.order, lines=lines))


def without_alternatives(ctx: MessageContext) -> MessageContext:
    choices = tuple(dataclasses.replace(c, alternatives=()) for c in ctx.order.choices)
    return dataclasses.replace(ctx, order=dataclasses.replace(ctx.order, choices=choices))


def with_data(trigger: str, **changes: Any) -> dict[str, dict[str, Any]]:
    return {trigger: {**news_data(trigger), **changes}}


def eta_move(
    old: tuple[str, str] | None, new: tuple[str, str] | None, direction: str
) -> dict[str, Any]:
    """Return `eta_changed` data moving the jacket's delivery range from `old` to `new`."""
    return {
        "lines": [
            {
                "line": "3",
                "direction": direction,
                "old": {"ship_by": old[0], "delivery": list(old)} if old else None,
                "new": {"ship_by": new[0], "delivery": list(new)} if new else None,
            }
        ]
    }


# (case, lead trigger, news data, a change to the context)
CASES: list[tuple[str, str, dict[str, dict[str, Any]], Callable[[MessageContext], Any] | None]] = [
    ("backordered", "backordered", {}, None),
    ("backordered-undated", "backordered", {}, undated),
    ("partial_shipment", "partial_shipment", {}, None),
    ("partial_shipment-undated", "partial_shipment", {}, undated),
    ("shipment_delayed", "shipment_delayed", {}, None),
    (
        "shipment_delayed-no-date",
        "shipment_delayed",
        with_data("shipment_delayed", carrier_eta=None),
        None,
    ),
    ("eta_changed-later", "eta_changed", {}, None),
    (
        "eta_changed-across-years",
        "eta_changed",
        {
            "eta_changed": eta_move(
                ("2026-12-28", "2027-01-04"), ("2027-01-18", "2027-01-25"), "later"
            )
        },
        None,
    ),
    (
        "eta_changed-earlier",
        "eta_changed",
        {
            "eta_changed": eta_move(
                ("2026-12-10", "2026-12-16"), ("2026-11-28", "2026-12-02"), "earlier"
            )
        },
        None,
    ),
    (
        "eta_changed-first-date",
        "eta_changed",
        {"eta_changed": eta_move(None, ("2026-12-30", "2027-01-06"), "earlier")},
        None,
    ),
    (
        "eta_changed-no-date",
        "eta_changed",
        {"eta_changed": eta_move(("2026-11-28", "2026-12-02"), None, "later")},
        None,
    ),
    ("items_ready", "items_ready", {}, None),
    ("window_at_risk", "window_at_risk", {}, None),
    ("window_expired", "window_expired", {}, None),
    ("window_expired-no-alternative", "window_expired", {}, without_alternatives),
    ("choice_confirmed-switch", "choice_confirmed", {}, None),
    (
        "choice_confirmed-keep",
        "choice_confirmed",
        with_data("choice_confirmed", decision="keep"),
        None,
    ),
    (
        "choice_confirmed-refund",
        "choice_confirmed",
        with_data("choice_confirmed", decision="refund"),
        None,
    ),
    (
        "choice_confirmed-defaulted-keep",
        "choice_confirmed",
        with_data("choice_confirmed", decision="keep", defaulted=True),
        None,
    ),
    (
        "choice_confirmed-defaulted-refund",
        "choice_confirmed",
        with_data("choice_confirmed", decision="refund", defaulted=True),
        None,
    ),
    ("shipment_exception-lost", "shipment_exception", {}, None),
    (
        "shipment_exception-problem",
        "shipment_exception",
        with_data("shipment_exception", status="exception"),
        None,
    ),
    (
        "shipment_exception-returned",
        "shipment_exception",
        with_data("shipment_exception", status="returned"),
        None,
    ),
]
# First Arabic SMS (with the opt-out line) that need a third segment, and later ones that do.
ARABIC_FIRST_OVER = {case for case, *_ in CASES} - {
    "shipment_delayed-no-date",
    "choice_confirmed-keep",
    "shipment_exception-problem",
    "shipment_exception-returned",
}
ARABIC_LATER_OVER = {
    "eta_changed-across-years",  # both ends of the old range carry their year
    "window_at_risk",  # a choice: a title, the deadline and three replies
    "window_expired",
    "window_expired-no-alternative",
    "choice_confirmed-switch",  # two titles
}


@pytest.fixture(scope="module")
def renderer() -> MessageRenderer:
    return MessageRenderer()


def context(
    case: str,
    locale: str,
    *more: str,
    brand: str = BRAND,
    sms_url: str = SMS_URL,
    first_sms: bool = True,
) -> MessageContext:
    _, trigger, data, change = next(c for c in CASES if c[0] == case)
    ctx = build_context(
        trigger,
        *more,
        locale=locale,
        brand_name=brand,
        sms_url=sms_url,
        data=data,
        first_sms=first_sms,
        several_orders=True,
    )
    return change(ctx) if change else ctx


def limits(locales: list[str], arabic_over: set[str]) -> list[Any]:
    """Return (case, locale, segments allowed) for every case in the locales."""
    return [
        pytest.param(
            case, locale, 3 if locale == "ar" and case in arabic_over else 2, id=f"{case}-{locale}"
        )
        for case, *_ in CASES
        for locale in locales
    ]


def check(sms: RenderedSms, limit: int) -> None:
    """Check the SMS fits in two segments, or takes exactly the three a listed case needs."""
    shown = f"{sms.units} {sms.encoding} units:\n{sms.body}"
    assert count_segments(sms.body).segments == sms.segments
    if limit == 2:
        assert sms.segments <= 2, shown
    else:
        assert sms.segments == limit, shown


@pytest.mark.parametrize(("case", "locale", "limit"), limits(list(LOCALES), ARABIC_FIRST_OVER))
def test_sms_fits_in_two_segments(renderer: MessageRenderer, case: str, locale: str, limit: int):
    sms = renderer.sms(context(case, locale))
    assert sms.body.startswith(BRAND + ":")
    assert sms.body.splitlines()[-2] == SMS_URL
    assert "STOP" in sms.body.splitlines()[-1]
    check(sms, limit)


@pytest.mark.parametrize(("case", "locale", "limit"), limits(["ar"], ARABIC_LATER_OVER))
def test_later_arabic_sms_fits_in_two_segments(
    renderer: MessageRenderer, case: str, locale: str, limit: int
):
    sms = renderer.sms(context(case, locale, first_sms=False))
    assert sms.body.splitlines()[-1] == SMS_URL
    check(sms, limit)


@pytest.mark.parametrize("locale", GSM_LOCALES)
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_sms_with_two_more_updates_fits_in_two_segments(
    renderer: MessageRenderer, case: str, locale: str
):
    lead = next(c[1] for c in CASES if c[0] == case)
    more = [t for t in ("items_ready", "backordered", "eta_changed") if t != lead][:2]
    sms = renderer.sms(context(case, locale, *more, brand=LONG_BRAND, sms_url=LONG_SMS_URL))
    assert LONG_SMS_URL in sms.body
    assert sms.segments <= 2, f"{sms.units} {sms.encoding} units:\n{sms.body}"


@pytest.mark.parametrize("locale", GSM_LOCALES)
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_sms_stays_in_the_gsm_alphabet(renderer: MessageRenderer, case: str, locale: str):
    body = renderer.sms(context(case, locale)).body
    assert count_segments(body).encoding == "GSM-7", [c for c in body if ord(c) > 0x7F]
    assert normalize_sms(body) == body
    assert not set(body) & set(TYPOGRAPHY)


def test_a_title_too_long_for_the_sms_is_clipped(renderer: MessageRenderer):
    title = "Alpine Pro Insulated Down Jacket with Removable Hood and Storm Cuffs, Size M, Charcoal"
    ctx = build_context(
        "window_at_risk",
        "eta_changed",
        "backordered",
        jacket=title,
        first_sms=True,
        several_orders=True,
    )
    sms = renderer.sms(ctx)
    assert sms.segments == 2
    assert title not in sms.body
    clipped = re.search(r"(Alpine Pro Insulated[^()]*)\.\.\. \(order NW-100234\)", sms.body)
    assert clipped is not None
    assert title.startswith(clipped[1])
    assert title in renderer.email(ctx).text  # the email keeps titles whole
