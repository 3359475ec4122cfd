"""Every shipped SMS, in every locale, with long realistic data, fits in two segments.

Realistic data: a 20-character brand name, the short link on a 23-character public host with
its 12-character code, the short ref of a shopper with several orders open, and the opt-out line
of a first SMS (every case is checked as a first SMS and as a later one). Dates fall in November
to January and in August, where French "août" would cost a GSM-7 message its alphabet: an SMS
spells it "aout" (the 1990 spelling), so every English, Spanish, French and German SMS stays
GSM-7. A stress test adds a 25-character brand, a longer host and two more updates.

Arabic is UCS-2: 134 code units in two segments, of which the brand line and the short link take
69. Where the full wording does not fit, the renderer gives up the least it can
(`MessageRenderer.sms`): the brief wording (the order number and secondary details left to the
link), then a choice's product titles, then its short refs, then the tight wording, then dates
in digits. Only a choice that is the first SMS a number gets from the brand goes that far: the
brief opt-out line ("أرسل STOP للإيقاف.") leaves it 45 units for the news, the deadline and the
three replies, whose brief Arabic takes 57. Its tight wording is a headline, the deadline and the
options as a menu, one a line, and the opt-out line as a label: "تأخر منتج." / "رد حتى 9/12:" /
"1 انتظار" / "2 بديل" / "3 استرداد" / link / "للإيقاف: STOP", 132 units, 133 with a two-digit
day and month ("19/12").

Every case is also checked with the shopper away from the brand (New York), in ZONES: either side
of UTC, half- and quarter-hour offsets, and offsets that change between the message and the
deadline (a deadline on the night New York's clocks go back). A choice sent before its deadline
is the rule: the August and DST cases are sent weeks ahead. The deadline is the last minute of
the brand's day, which falls inside the shopper's day elsewhere ("10 ديسمبر، 7:59 ص" in Riyadh):
its time costs the units a first choice SMS needs, and a later one that carries another update
("وتحديث آخر."). The ladder's last step then names the last whole day before the deadline in the
shopper's timezone, without its time: "رد حتى 9/12:" for 7:59 on December 10, "8/12" for 20:59
on December 9 in Los Angeles. The shopper loses those hours, never gains one: the day is read
back and checked against the deadline. A day already over when the SMS goes is never named (the
SMS keeps the time, in three segments if it must).

Every pair of news is checked too, in every locale, as a first SMS and a later one, in every
timezone: each case as the lead with each trigger that follows it in TRIGGERS, the order a message
lists its news in (`compose` sorts them so, and folds ETA changes into one item: a pair is two
different triggers). The other update costs a line ("وتحديث آخر.", 12 units in Arabic). A first
Arabic SMS has no room for it: a choice needs 144 units at its tightest, other news up to 154 in
its brief wording. There, and only there, the ladder climbs again without the mention: the SMS
tells the lead news as it would alone (a choice in its tight wording, "تأخر منتج." / "رد حتى
9/12:" / "1 انتظار" / "2 بديل" / "3 استرداد" / link / "للإيقاف: STOP"; other news in its brief
wording with the whole opt-out line), and the link shows the rest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.i18n import LOCALES
from messaging.context import TRIGGERS, MessageContext
from messaging.render import MessageRenderer, RenderedSms, SmsFormatter
from messaging.replies import read_reply
from messaging.segments import count_segments, is_gsm7, normalize_sms
from tests.messaging.test_render import (
    CODE,
    SMS_URL,
    TIMEZONE,
    build_context,
    news_data,
    say,
    say_n,
    sms_text,
)

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


def poles_now(status: str) -> Callable[[MessageContext], MessageContext]:
    """Give the poles (the other backordered line) another status: delivered, in stock."""

    def change(ctx: MessageContext) -> MessageContext:
        lines = tuple(
            dataclasses.replace(line, status=status) if line.ref == "4" else line
            for line in ctx.order.lines
        )
        return dataclasses.replace(ctx, order=dataclasses.replace(ctx.order, lines=lines))

    return change


def two_moves(poles_direction: str) -> dict[str, Any]:
    """Return `eta_changed` data moving the jacket later and the poles in `poles_direction`."""
    poles = {
        "line": "4",
        "direction": poles_direction,
        "old": {"ship_by": "2026-12-01", "delivery": ["2026-12-03", "2026-12-07"]},
        "new": {"ship_by": "2026-12-15", "delivery": ["2026-12-17", "2026-12-23"]},
    }
    if poles_direction == "earlier":
        poles["old"], poles["new"] = poles["new"], poles["old"]
    return {"lines": [*news_data("eta_changed")["lines"], poles]}


def in_august(ctx: MessageContext) -> MessageContext:
    """Move the backordered lines' dates to August (the month French spells with a û)."""
    dates = {
        "3": (dt.date(2026, 8, 3), dt.date(2026, 8, 5), dt.date(2026, 8, 11)),
        "4": (dt.date(2026, 8, 10), dt.date(2026, 8, 12), dt.date(2026, 8, 18)),
    }
    lines = tuple(
        dataclasses.replace(
            line,
            ship_by=dates[line.ref][0],
            delivery_from=dates[line.ref][1],
            delivery_to=dates[line.ref][2],
        )
        if line.ref in dates
        else line
        for line in ctx.order.lines
    )
    return dataclasses.replace(ctx, order=dataclasses.replace(ctx.order, lines=lines))


# 23:59 on Aug 9 in New York.
AUGUST_DEADLINE = dt.datetime(2026, 8, 10, 3, 59, tzinfo=dt.UTC).isoformat()
# 23:59 on Dec 19 in New York: the longest numeric date ("19/12").
LATE_DEADLINE = dt.datetime(2026, 12, 20, 4, 59, tzinfo=dt.UTC).isoformat()
# 23:59 on Nov 1 in New York, the night its clocks go back: 04:59 UTC, not 03:59.
DST_DEADLINE = dt.datetime(2026, 11, 2, 4, 59, tzinfo=dt.UTC).isoformat()
# Shoppers away from the brand (New York): either side of UTC, half and quarter hours, a zone a
# day ahead of Honolulu at the same instant, and zones whose clocks change between the DST case's
# message (Oct 20) and its deadline (Nov 1 in New York).
ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Paris",
    "Asia/Riyadh",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Pacific/Auckland",
    "Pacific/Kiritimati",
    "America/St_Johns",
    "America/Chicago",
    "America/Los_Angeles",
    "Pacific/Honolulu",
)


def sent_at(now: dt.datetime) -> Callable[[MessageContext], MessageContext]:
    """Send the message at `now` (a choice's SMS goes out before its deadline)."""
    return lambda ctx: dataclasses.replace(ctx, now=now)


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
    # The cases above move the jacket while the poles still wait: the SMS names the item. Here
    # the jacket is all the order has to come (the order's wording), or the poles wait in stock.
    ("eta_changed-all-that-is-left", "eta_changed", {}, poles_now("delivered")),
    ("eta_changed-in-stock-to-come", "eta_changed", {}, poles_now("in_stock")),
    ("eta_changed-two-lines", "eta_changed", {"eta_changed": two_moves("later")}, None),
    ("eta_changed-two-lines-mixed", "eta_changed", {"eta_changed": two_moves("earlier")}, None),
    ("items_ready", "items_ready", {}, None),
    ("window_at_risk", "window_at_risk", {}, None),
    ("window_expired", "window_expired", {}, None),
    ("window_expired-no-alternative", "window_expired", {}, without_alternatives),
    (
        "window_expired-two-digit-deadline",
        "window_expired",
        with_data("window_expired", deadline=LATE_DEADLINE),
        None,
    ),
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
    ("backordered-august", "backordered", {}, in_august),
    ("partial_shipment-august", "partial_shipment", {}, in_august),
    ("items_ready-august", "items_ready", {}, in_august),
    (
        "shipment_delayed-august",
        "shipment_delayed",
        with_data("shipment_delayed", promised="2026-08-04", carrier_eta="2026-08-07"),
        None,
    ),
    (
        "eta_changed-into-august",
        "eta_changed",
        {
            "eta_changed": eta_move(
                ("2026-07-27", "2026-07-31"), ("2026-08-03", "2026-08-07"), "later"
            )
        },
        None,
    ),
    (
        "window_at_risk-august",
        "window_at_risk",
        with_data("window_at_risk", deadline=AUGUST_DEADLINE),
        sent_at(dt.datetime(2026, 7, 27, 15, 0, tzinfo=dt.UTC)),
    ),
    (
        "window_at_risk-dst",
        "window_at_risk",
        with_data("window_at_risk", deadline=DST_DEADLINE),
        sent_at(dt.datetime(2026, 10, 20, 15, 0, tzinfo=dt.UTC)),
    ),
]
CHOICES = ("window_at_risk", "window_expired")
AUGUST = [case for case, *_ in CASES if case.endswith("august")]


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
    timezone: str = TIMEZONE,
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
    ctx = dataclasses.replace(ctx, timezone=timezone)
    return change(ctx) if change else ctx


def trigger_of(case: str) -> str:
    return next(c[1] for c in CASES if c[0] == case)


def shown(sms: RenderedSms) -> str:
    return f"{sms.units} {sms.encoding} units:\n{sms.body}"


def first_contact_choice(case: str, locale: str, first_sms: bool) -> bool:
    """Tell whether this SMS needs the tight wording: an Arabic choice as the first SMS."""
    return first_sms and locale == "ar" and trigger_of(case) in CHOICES


def last_whole_day(deadline: dt.datetime, zone: str) -> dt.date:
    """Return the last day a shopper in `zone` can answer all of: the deadline's own if it ends
    that day, else the day before it."""
    local = deadline.astimezone(zoneinfo.ZoneInfo(zone))
    if local.time() >= dt.time(23, 59):
        return local.date()
    return local.date() - dt.timedelta(days=1)


def in_time(day: dt.date, deadline: dt.datetime, zone: str) -> bool:
    """Tell whether a shopper in `zone` who answers at any time on `day` is in time."""
    tz = zoneinfo.ZoneInfo(zone)
    local = deadline.astimezone(tz)
    if day == local.date() and local.time() >= dt.time(23, 59):
        return True  # a deadline in the day's last minute is that day's end, as "by Dec 9" says
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz) <= deadline


def read_numeric_date(text: str, locale: str, near: dt.date) -> dt.date:
    """Read a day and month in digits ("9/12", "12/9", "09/12", "9.12.") as the date up to a
    year before `near`."""
    first, second = (int(n) for n in re.findall(r"\d+", text))
    month, day = (first, second) if locale == "en" else (second, first)
    date = dt.date(near.year, month, day)
    return date if date <= near else dt.date(near.year - 1, month, day)


@pytest.mark.parametrize("first_sms", [True, False], ids=["first", "later"])
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_sms_fits_in_two_segments(
    renderer: MessageRenderer, case: str, locale: str, first_sms: bool
):
    """In every shopper's timezone: the brand's 23:59 deadline is their 7:59, or their 20:59."""
    for timezone in (TIMEZONE, *ZONES):
        sms = renderer.sms(context(case, locale, first_sms=first_sms, timezone=timezone))
        lines = sms.body.splitlines()
        assert lines[0].startswith(BRAND + ":"), timezone
        if first_sms:
            # The opt-out line is a label only in the tight wording, which nothing else needs.
            tight = first_contact_choice(case, locale, first_sms)
            opt_out = "Opt out: STOP" if tight else "Reply STOP to opt out."
            assert lines[-2:] == [SMS_URL, sms_text(say(locale, opt_out))], timezone
            assert "STOP" in lines[-1]
        else:
            assert lines[-1] == SMS_URL, timezone
        assert count_segments(sms.body).segments == sms.segments
        assert sms.segments <= 2, f"{timezone}: {shown(sms)}"


@pytest.mark.parametrize(
    ("timezone", "date"),
    [
        (TIMEZONE, "9/12"),  # 23:59 on Dec 9: the end of the shopper's day
        ("Asia/Riyadh", "9/12"),  # 7:59 on Dec 10: the whole day before it
        ("Asia/Kolkata", "9/12"),  # 10:29 on Dec 10
        ("America/Los_Angeles", "8/12"),  # 20:59 on Dec 9: Dec 8 is the last whole day
    ],
)
def test_a_first_arabic_choice_sms_in_its_tight_wording(
    renderer: MessageRenderer, timezone: str, date: str
):
    body = renderer.sms(context("window_at_risk", "ar", timezone=timezone)).body
    assert body.splitlines() == [
        f"{BRAND}:",
        "تأخر منتج.",
        f"رد حتى {date}:",
        "1 انتظار",
        "2 بديل",
        "3 استرداد",
        SMS_URL,
        "للإيقاف: STOP",
    ]


@pytest.mark.parametrize("more", [(), ("eta_changed",)], ids=["alone", "with-another-update"])
@pytest.mark.parametrize("case", [c[0] for c in CASES if c[1] in CHOICES])
@pytest.mark.parametrize("timezone", [TIMEZONE, *ZONES])
def test_a_first_arabic_choice_sms_keeps_every_fact(
    renderer: MessageRenderer, case: str, timezone: str, more: tuple[str, ...]
):
    """Brand, news, deadline, the numbered options, link and how to stop, in two segments; the
    other update, if any, is left to the link."""
    ctx = context(case, "ar", *more, timezone=timezone)
    sms = renderer.sms(ctx)
    assert sms.segments == 2, shown(sms)
    lines = sms.body.splitlines()
    assert lines[:2] == [BRAND + ":", say("ar", "An item is delayed.")]
    assert lines[-2:] == [SMS_URL, say("ar", "Opt out: STOP")]
    # The deadline in the shopper's timezone, by its month's name where it fits, else day/month
    # in digits; where its time does not fit, the last day they can answer all of: never later.
    choice = ctx.order.choices[0]
    deadline = dt.datetime.fromisoformat(ctx.news[0].data["deadline"])
    zone = zoneinfo.ZoneInfo(timezone)
    exact = {
        SmsFormatter("ar", zone, brief=True, numeric=numeric).short_moment(deadline)
        for numeric in (False, True)
    }
    day = last_whole_day(deadline, timezone)
    whole_day = f"{day.day}/{day.month}"
    dates = {say("ar", "Reply by %(deadline)s:", deadline=date) for date in {*exact, whole_day}}
    assert lines[2] in dates
    if lines[2] == say("ar", "Reply by %(deadline)s:", deadline=whole_day):
        local = deadline.astimezone(zone).date()
        assert in_time(read_numeric_date(lines[2], "ar", near=local), deadline, timezone)
    # Each option a line; its number and its word both read as what the option says.
    labels = {"keep": "انتظار", "switch": "بديل", "refund": "استرداد"}
    switch = [f"2 {labels['switch']}"] if choice.alternatives else []
    options = lines[3:-2]
    assert options == [f"1 {labels['keep']}", *switch, f"3 {labels['refund']}"]
    for option in options:
        number, word = option.split(" ", 1)
        decision = read_reply(word).decision
        assert decision is not None
        assert labels[decision] == word
        assert read_reply(number).decision == decision


def test_arabic_gives_up_the_least_it_can(renderer: MessageRenderer):
    """The full wording where it fits, the brief one where not; titles before short refs."""
    later = renderer.sms(context("shipment_delayed-no-date", "ar", first_sms=False))
    assert "NW-100234" in later.body
    first = renderer.sms(context("shipment_delayed", "ar"))
    assert "NW-100234" not in first.body
    assert (
        sms_text(
            say(
                "ar",
                "A parcel from your order is delayed, now expected %(date)s.",
                date="27 نوفمبر",
            )
        )
        in first.body
    )
    # A later choice: without its short refs the title fits again, clipped.
    at_risk = renderer.sms(context("window_at_risk", "ar", first_sms=False))
    assert "Alpine Pr" in at_risk.body
    assert "A7" not in at_risk.body
    assert at_risk.segments == 2


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


@pytest.mark.parametrize("case", AUGUST)
def test_french_sms_spell_august_aout(renderer: MessageRenderer, case: str):
    sms = renderer.sms(context(case, "fr"))
    assert "aout" in sms.body
    assert "août" not in sms.body
    assert sms.encoding == "GSM-7"


def test_french_email_keeps_the_circumflex(renderer: MessageRenderer):
    email = renderer.email(context("backordered-august", "fr"))
    assert "août" in email.text
    assert "aout" not in email.text


@pytest.mark.parametrize("locale", GSM_LOCALES)
def test_sms_dates_of_every_month_stay_in_the_gsm_alphabet(locale: str):
    for brief, numeric in ((False, False), (True, False), (True, True)):
        fmt = SmsFormatter(locale, zoneinfo.ZoneInfo(TIMEZONE), brief=brief, numeric=numeric)
        for month in range(1, 13):
            start = dt.date(2026, month, 3)
            texts = [
                fmt.short_date(start),
                fmt.date(start),
                fmt.date_range(start, start + dt.timedelta(days=4)),
                fmt.date_range(start, start + dt.timedelta(days=40)),
                fmt.short_moment(dt.datetime(2026, month, 9, 16, 30, tzinfo=dt.UTC)),
            ]
            for text in texts:
                assert is_gsm7(normalize_sms(text)), (month, text)


def test_numeric_dates_put_the_day_where_the_locale_reads_it():
    """Day and month in digits, without the bidi marks CLDR gives Arabic (a unit each)."""
    dates = {
        locale: SmsFormatter(locale, zoneinfo.ZoneInfo(TIMEZONE), brief=True, numeric=True)
        for locale in LOCALES
    }
    december_9, december_19 = dt.date(2026, 12, 9), dt.date(2026, 12, 19)
    assert {locale: fmt.short_date(december_9) for locale, fmt in dates.items()} == {
        "en": "12/9",
        "es": "9/12",
        "fr": "09/12",
        "de": "9.12.",
        "ar": "9/12",
    }
    assert dates["ar"].short_date(december_19) == "19/12"
    assert sms_text(dates["ar"].date_range(december_9, december_19)) == "9/12 - 19/12"
    # A deadline at the very end of the shopper's day is the date alone.
    assert dates["ar"].short_moment(dt.datetime(2026, 12, 10, 4, 59, tzinfo=dt.UTC)) == "9/12"


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


@settings(max_examples=300, deadline=None)
@given(
    deadline=st.datetimes(
        min_value=dt.datetime(2026, 1, 1),
        max_value=dt.datetime(2028, 12, 31),
        timezones=st.just(dt.UTC),
    ),
    zone=st.sampled_from((TIMEZONE, *ZONES)),
    locale=st.sampled_from(LOCALES),
)
def test_a_deadline_written_as_a_whole_day_is_never_later(
    deadline: dt.datetime, zone: str, locale: str
):
    """Read back, the day an SMS names is one the shopper can answer all of, and the last."""
    fmt = SmsFormatter(locale, zoneinfo.ZoneInfo(zone), brief=True, numeric=True, whole_days=True)
    local = deadline.astimezone(zoneinfo.ZoneInfo(zone)).date()
    day = read_numeric_date(fmt.short_moment(deadline), locale, near=local)
    assert in_time(day, deadline, zone)
    assert day == last_whole_day(deadline, zone)


def test_a_day_already_over_is_not_named(renderer: MessageRenderer):
    """Sent on the deadline's own day in the shopper's timezone, the SMS keeps the deadline's
    time, in three segments if it must: the day before would tell them they are too late."""
    ctx = context("window_at_risk", "ar", timezone="Asia/Riyadh")  # the deadline: Dec 10, 7:59
    day_before = dataclasses.replace(ctx, now=dt.datetime(2026, 12, 9, 6, 0, tzinfo=dt.UTC))
    assert "رد حتى 9/12:" in renderer.sms(day_before).body.splitlines()
    on_the_day = dataclasses.replace(ctx, now=dt.datetime(2026, 12, 9, 22, 0, tzinfo=dt.UTC))
    sms = renderer.sms(on_the_day)
    assert "9/12" not in sms.body
    assert "10 ديسمبر، 7:59" in sms.body


@pytest.mark.parametrize("more", [t for t in TRIGGERS if t not in CHOICES])
@pytest.mark.parametrize("case", [c[0] for c in CASES if c[1] in CHOICES])
def test_a_later_arabic_choice_sms_with_another_update_fits(
    renderer: MessageRenderer, case: str, more: str
):
    for timezone in (TIMEZONE, *ZONES):
        sms = renderer.sms(context(case, "ar", more, first_sms=False, timezone=timezone))
        assert sms.body.splitlines()[-2:] == [say("ar", "And one more update."), SMS_URL]
        assert sms.segments <= 2, f"{timezone}: {shown(sms)}"


# (lead case, the other update): each case with every trigger that follows its own in TRIGGERS.
PAIRS = [
    (case, other)
    for case, trigger, *_ in CASES
    for other in TRIGGERS[TRIGGERS.index(trigger) + 1 :]
]
OPT_OUTS = ("Reply STOP to opt out.", "Opt out: STOP")


@pytest.mark.parametrize("first_sms", [True, False], ids=["first", "later"])
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("case", "other"), PAIRS, ids=["+".join(pair) for pair in PAIRS])
def test_sms_with_another_update_fits_in_two_segments(
    renderer: MessageRenderer, case: str, other: str, locale: str, first_sms: bool
):
    """It says so ("And one more update."), except a first Arabic SMS: it has no room left."""
    mention = say(locale, "And one more update.")
    for timezone in (TIMEZONE, *ZONES):
        sms = renderer.sms(context(case, locale, other, first_sms=first_sms, timezone=timezone))
        lines = sms.body.splitlines()
        assert lines[0].startswith(BRAND + ":"), timezone
        if first_sms:
            assert lines[-2] == SMS_URL, timezone
            assert lines[-1] in {sms_text(say(locale, opt_out)) for opt_out in OPT_OUTS}
        else:
            assert lines[-1] == SMS_URL, timezone
        if not (locale == "ar" and first_sms):
            assert lines[lines.index(SMS_URL) - 1] == mention, f"{timezone}: {shown(sms)}"
        assert sms.segments <= 2, f"{timezone}: {shown(sms)}"


@pytest.mark.parametrize("other", ["backordered", "choice_confirmed"])
def test_a_first_arabic_sms_leaves_another_update_to_the_link(
    renderer: MessageRenderer, other: str
):
    """Told as the lead news alone would be: the whole opt-out line fits again."""
    alone = renderer.sms(context("eta_changed-later", "ar"))
    sms = renderer.sms(context("eta_changed-later", "ar", other))
    assert sms.body == alone.body
    assert sms.body.splitlines()[-3:] == [
        say("ar", "Sorry, an item of your order will arrive later: now %(new)s.", new="3-7 ديسمبر"),
        SMS_URL,
        say("ar", "Reply STOP to opt out."),
    ]
    # A later SMS has room to say there is more.
    later = renderer.sms(context("eta_changed-later", "ar", other, first_sms=False))
    assert say("ar", "And one more update.") in later.body.splitlines()
    assert later.segments == 2


ORDER_CLAIMS = (
    "Sorry, your order will arrive later: now %(new)s.",
    "Good news: your order will arrive sooner: now %(new)s.",
    "Sorry, order %(number)s will arrive later: now %(new)s (was %(old)s).",
    "Good news: order %(number)s will arrive sooner: now %(new)s (was %(old)s).",
)
OTHERS_TO_COME = [
    case
    for case, trigger, *_ in CASES
    if trigger == "eta_changed" and case != "eta_changed-all-that-is-left"
]


def opening(locale: str, message: str) -> str:
    """Return a message's words up to its first variable: what names the order or the item."""
    return sms_text(say(locale, message, number="\0", new="\0", old="\0")).split("\0")[0]


@pytest.mark.parametrize("first_sms", [True, False], ids=["first", "later"])
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("case", OTHERS_TO_COME)
def test_an_eta_change_never_moves_the_whole_order_while_other_items_come(
    renderer: MessageRenderer, case: str, locale: str, first_sms: bool
):
    """Only when the moved line is all the order still has to come does the order move."""
    body = renderer.sms(context(case, locale, first_sms=first_sms)).body
    news = body.splitlines()[1]
    for claim in ORDER_CLAIMS:
        assert not news.startswith(opening(locale, claim)), news
    alone = renderer.sms(context("eta_changed-all-that-is-left", locale, first_sms=first_sms))
    assert any(alone.body.splitlines()[1].startswith(opening(locale, c)) for c in ORDER_CLAIMS)
    if case == "eta_changed-two-lines":
        brief = "Sorry, one item of your order will arrive later: now %(new)s."
        plural = "Sorry, %(num)s items of your order will arrive later: now %(new)s."
        full = "Sorry, one item of order %(number)s will arrive later: now %(new)s."
        fulls = "Sorry, %(num)s items of order %(number)s will arrive later: now %(new)s."
        starts = {
            sms_text(say_n(locale, brief, plural, 2, new="\0")).split("\0")[0],
            sms_text(say_n(locale, full, fulls, 2, number="\0", new="\0")).split("\0")[0],
        }
        assert any(news.startswith(start) for start in starts), news
