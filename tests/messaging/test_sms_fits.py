"""Every shipped SMS, in every locale, with long realistic data, fits in two segments.

The data is the worst we expect often: a 25-character brand name, a 30-character tracking host
with a 32-character token, the opt-out line of a first SMS and the short ref of a shopper with
several orders open. Arabic cannot fit (see `ARABIC_OVER`): UCS-2 gives it 134 code units for
two segments, and the brand, the link and the opt-out line alone take 128 of them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest

from app.i18n import LOCALES
from messaging.context import MessageContext
from messaging.render import MessageRenderer
from messaging.segments import count_segments, normalize_sms
from tests.messaging.test_render import TOKEN, build_context, news_data

BRAND = "Northwind Outfitters Ltd."  # 25 characters
TRACKING_URL = "https://track.northwind-outfitters.com/t/" + TOKEN  # a 30-character host
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
# Segments the Arabic messages take today (UCS-2), so that they do not silently grow.
ARABIC_SEGMENTS = 3
ARABIC_OVER = {
    "window_at_risk": 4,
    "window_expired": 4,
    "window_expired-no-alternative": 4,
    "eta_changed-across-years": 4,
}
# A choice that comes with two more updates: the options, the deadline, "and 2 more updates"
# and the opt-out line leave no room in these languages.
COALESCED_OVER = {("fr", "window_at_risk"), ("fr", "window_expired"), ("de", "window_expired")}


@pytest.fixture(scope="module")
def renderer() -> MessageRenderer:
    return MessageRenderer()


def context(case: str, locale: str, *more: str) -> MessageContext:
    _, trigger, data, change = next(c for c in CASES if c[0] == case)
    ctx = build_context(
        trigger,
        *more,
        locale=locale,
        brand_name=BRAND,
        tracking_url=TRACKING_URL,
        data=data,
        first_sms=True,
        several_orders=True,
    )
    return change(ctx) if change else ctx


def params(locales: list[str], xfail: Callable[[str, str], str | None]) -> list[Any]:
    found = []
    for case, _, _, _ in CASES:
        for locale in locales:
            reason = xfail(locale, case)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            found.append(pytest.param(case, locale, id=f"{case}-{locale}", marks=marks))
    return found


def arabic_is_too_long(locale: str, case: str) -> str | None:
    if locale == "ar":
        return "UCS-2: the brand, the link and the opt-out line take 128 of 134 code units"
    return None


def coalesced_is_too_long(locale: str, case: str) -> str | None:
    if (locale, case) in COALESCED_OVER:
        return "a choice plus two more updates needs a third segment in this language"
    return arabic_is_too_long(locale, case)


@pytest.mark.parametrize(("case", "locale"), params(list(LOCALES), arabic_is_too_long))
def test_sms_fits_in_two_segments(renderer: MessageRenderer, case: str, locale: str):
    sms = renderer.sms(context(case, locale))
    assert sms.body.startswith(BRAND + ":")
    assert TRACKING_URL in sms.body
    assert "STOP" in sms.body.splitlines()[-1]
    assert count_segments(sms.body).segments == sms.segments
    assert sms.segments <= 2, f"{sms.units} {sms.encoding} units:\n{sms.body}"


@pytest.mark.parametrize(("case", "locale"), params(GSM_LOCALES, coalesced_is_too_long))
def test_sms_with_two_more_updates_fits_in_two_segments(
    renderer: MessageRenderer, case: str, locale: str
):
    lead = next(c[1] for c in CASES if c[0] == case)
    more = [t for t in ("items_ready", "backordered", "eta_changed") if t != lead][:2]
    sms = renderer.sms(context(case, locale, *more))
    assert sms.segments <= 2, f"{sms.units} {sms.encoding} units:\n{sms.body}"


@pytest.mark.parametrize("locale", GSM_LOCALES)
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_sms_stays_in_the_gsm_alphabet(renderer: MessageRenderer, case: str, locale: str):
    body = renderer.sms(context(case, locale)).body
    assert count_segments(body).encoding == "GSM-7", [c for c in body if ord(c) > 0x7F]
    assert normalize_sms(body) == body
    assert not set(body) & set(TYPOGRAPHY)


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_arabic_sms_stays_within_its_known_length(renderer: MessageRenderer, case: str):
    sms = renderer.sms(context(case, "ar"))
    assert sms.encoding == "UCS-2"
    assert sms.segments <= ARABIC_OVER.get(case, ARABIC_SEGMENTS), sms.body


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
