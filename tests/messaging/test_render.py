"""Message rendering: each trigger, channel and locale, coalesced news, brand overrides, sandbox."""

from __future__ import annotations

import datetime as dt
import inspect
import re
import zoneinfo
from dataclasses import fields, is_dataclass, replace
from types import MappingProxyType
from typing import Any

import pytest
from jinja2 import StrictUndefined, Undefined
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from app.i18n import LOCALES, Formatter, translations
from messaging import render
from messaging.context import (
    OPTIONAL_EMAIL_TRIGGERS,
    TRIGGERS,
    BrandInfo,
    ChoiceInfo,
    LineInfo,
    MessageContext,
    NewsItem,
    OrderInfo,
    ParcelInfo,
)
from messaging.render import (
    _DATA_ATTRIBUTES,
    _QUICK_METHODS,
    FULL,
    Clip,
    EtaMove,
    MessageFormatter,
    MessageRenderer,
    RenderedEmail,
    RenderedSms,
    Room,
    SmsFormatter,
    Story,
    TemplateProblem,
)
from messaging.segments import count_segments, normalize_sms

TOKEN = "q7Xv2LmN9pR4sT8wYz3Kb6Hc1Dj5Fg0A"  # 32 url-safe characters
TRACKING_URL = "https://track.northwind.example/t/" + TOKEN
CODE = "Xk3Qm9Rt2Wz7"  # 12 base62 characters: the short link's code
SMS_URL = "https://track.northwind.example/s/" + CODE
UNSUBSCRIBE_URL = "https://track.northwind.example/u/" + TOKEN
TIMEZONE = "America/New_York"
JACKET = "Alpine Pro Insulated Down Jacket, Size M, Charcoal"
NAVY = "Alpine Pro Insulated Down Jacket, Size M, Navy"
POLES = "Summit Carbon Trekking Poles with Cork Grips (Pair)"
BACKPACK = "Trailblazer 45L Waterproof Hiking Backpack, Forest Green"
BASE_LAYER = "Merino Wool Base Layer Crew, Men's Medium"
CLIPPED = JACKET[:9]  # the least of a title an SMS keeps when it is clipped to fit


def day(month: int, number: int) -> dt.date:
    return dt.date(2026, month, number)


# 23:59 on Dec 9 in New York: the deadline must show in the shopper's timezone.
DEADLINE = dt.datetime(2026, 12, 10, 4, 59, tzinfo=dt.UTC)
OLD, NEW, COMING = (day(11, 28), day(12, 2)), (day(12, 3), day(12, 7)), (day(12, 3), day(12, 16))
PARCEL = "1Z999AA10123456784"
COMING_MSG = "Another package is still coming, expected %(range)s."
BACKORDERED_MSG = (
    "Thanks for order %(number)s! One item is on backorder, expected %(range)s.",
    "Thanks for order %(number)s! %(num)s items are on backorder, expected %(range)s.",
)
CARRIER_ETA_MSG = "The carrier now expects it on %(date)s."
LATER_MSG = "Sorry, order %(number)s will arrive later: now %(new)s (was %(old)s)."
ITEM_LATER_MSG = "Sorry, %(title)s (order %(number)s) will arrive later: now %(new)s (was %(old)s)."
AN_ITEM_LATER_MSG = "Sorry, an item of your order will arrive later: now %(new)s."
SWITCHED_MSG = "You chose to switch to %(title)s. We will ship it as soon as we can."
LOST_MSG = (
    "A parcel from order %(number)s was lost in transit. We will contact you about a "
    "replacement or a refund."
)
OPT_OUT_WORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")


def news_data(trigger: str) -> dict[str, Any]:
    """Return realistic `NewsItem.data` for a trigger, about the order `build_context` makes."""
    window = {
        "lines": ["3"],
        "choices": [7],
        "deadline": DEADLINE.isoformat(),
        "default_action": "keep",
    }
    return {
        "backordered": {"lines": ["3", "4"]},
        "partial_shipment": {"shipment": "P1"},
        "shipment_delayed": {
            "shipment": "P1",
            "promised": "2026-11-24",
            "carrier_eta": "2026-11-27",
        },
        "eta_changed": {
            "lines": [
                {
                    "line": "3",
                    "direction": "later",
                    "old": {"ship_by": "2026-11-26", "delivery": ["2026-11-28", "2026-12-02"]},
                    "new": {"ship_by": "2026-12-01", "delivery": ["2026-12-03", "2026-12-07"]},
                }
            ]
        },
        "items_ready": {"lines": ["3"]},
        "window_at_risk": window,
        "window_expired": window,
        "choice_confirmed": {
            "choice": 7,
            "line": "3",
            "decision": "switch",
            "alternative": "JKT-ALP-M-NVY",
            "defaulted": False,
        },
        "shipment_exception": {"shipment": "P1", "status": "lost"},
    }[trigger]


def build_context(
    *triggers: str,
    locale: str = "en",
    brand_name: str = "Northwind Outfitters",
    tracking_url: str = TRACKING_URL,
    sms_url: str | None = SMS_URL,
    jacket: str = JACKET,
    data: dict[str, dict[str, Any]] | None = None,
    **options: Any,
) -> MessageContext:
    """Build the context of a message about Ana's order NW-100234, carrying the given news."""
    lines = (
        LineInfo("1", BACKPACK, 1, "shipped"),
        LineInfo("2", BASE_LAYER, 2, "shipped"),
        LineInfo(
            "3",
            jacket,
            1,
            "backordered",
            backorder_type="standard",
            ship_by=day(12, 1),
            delivery_from=day(12, 3),
            delivery_to=day(12, 7),
            eta_reason="restock",
            queue_position=4,
        ),
        LineInfo(
            "4",
            POLES,
            1,
            "backordered",
            backorder_type="manufacturer",
            ship_by=day(12, 8),
            delivery_from=day(12, 10),
            delivery_to=day(12, 16),
            eta_reason="manufacturer_date",
        ),
    )
    parcel = ParcelInfo(
        ref="P1",
        carrier="ups",
        tracking_number="1Z999AA10123456784",
        status="in_transit",
        tracking_url="https://www.ups.com/track?tracknum=1Z999AA10123456784",
        promised_date=day(11, 24),
        carrier_eta=day(11, 27),
        lines=((BACKPACK, 1), (BASE_LAYER, 2)),
    )
    choice = ChoiceInfo(
        id=7,
        line_ref="3",
        line_title=jacket,
        reason="at_risk",
        state="open",
        deadline=DEADLINE,
        default_action="keep",
        alternatives=(
            {"sku": "JKT-ALP-M-NVY", "title": NAVY},
            {"sku": "JKT-RDG-M-BLK", "title": "Ridgeline Synthetic Puffer Jacket, Size M, Black"},
        ),
        short_ref="A7",
    )
    brand = BrandInfo(
        slug="northwind",
        name=brand_name,
        timezone=TIMEZONE,
        support_email="help@northwind.example",
        support_phone="+1 415 555 0199",
        support_url="https://northwind.example/help",
        logo_url="https://cdn.northwind.example/logo.png",
        tokens={
            "accent": "#0b6e4f",
            "text": "#1b1f24",
            "background": "#ffffff",
            "muted": "#545d68",
        },
    )
    order = OrderInfo(
        number="NW-100234",
        tracking_url=tracking_url,
        sms_url=sms_url,
        customer_name="Ana García",
        lines=lines,
        parcels=(parcel,),
        choices=(choice,),
    )
    data = data or {}
    news = tuple(
        NewsItem(trigger, f"order:NW-100234:{trigger}", data.get(trigger, news_data(trigger)))
        for trigger in triggers
    )
    return MessageContext(
        brand=brand,
        order=order,
        news=news,
        locale=locale,
        timezone=TIMEZONE,
        now=dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC),
        **options,
    )


@pytest.fixture(scope="module")
def renderer() -> MessageRenderer:
    return MessageRenderer()


def fmt(locale: str) -> Formatter:
    return Formatter(locale, zoneinfo.ZoneInfo(TIMEZONE))


def sms_fmt(locale: str) -> SmsFormatter:
    """Dates as the brief wording of an SMS writes them."""
    return SmsFormatter(locale, zoneinfo.ZoneInfo(TIMEZONE), brief=True)


def say(locale: str, message: str, **variables: Any) -> str:
    """Translate one catalog message the way the templates do."""
    return one_period(translations(locale).gettext(message) % variables)


def say_n(locale: str, singular: str, plural: str, n: int, **variables: Any) -> str:
    return one_period(translations(locale).ngettext(singular, plural, n) % {"num": n, **variables})


def one_period(text: str) -> str:
    """Drop the sentence's period after an abbreviated date ("le 27 nov.."), as messages do."""
    return re.sub(r"(?<=\w)\.\.(?=\s|$)", ".", text)


def sms_text(text: str) -> str:
    """Return text as it reads in an SMS: normalized, one space between words."""
    return " ".join(normalize_sms(text).split())


def flat(text: str) -> str:
    """Return email text with line breaks and runs of spaces as single spaces."""
    return " ".join(text.split())


def reply_options(locale: str, keep: str, switch: str, refund: str, brief: bool = False) -> str:
    """Return the choice's options and deadline as the SMS words them (full or brief)."""
    fmt = SmsFormatter(locale, zoneinfo.ZoneInfo(TIMEZONE), brief=brief)
    message = (
        "Reply by %(deadline)s: %(keep)s keep waiting, %(switch)s similar item, %(refund)s refund."
        if brief
        else "Reply by %(deadline)s: %(keep)s to keep waiting, %(switch)s for a similar item, "
        "%(refund)s for a refund."
    )
    return say(
        locale,
        message,
        deadline=fmt.short_moment(DEADLINE),
        keep=keep,
        switch=switch,
        refund=refund,
    )


def expected_facts(trigger: str, locale: str) -> tuple[list[str], list[str | tuple[str, ...]]]:
    """Return what the email and the SMS must say about the lead news, in the locale.

    An SMS fact may come as alternatives: the full wording, or the brief one an SMS falls back
    to when the full one does not fit two segments (in practice: Arabic, UCS-2).
    """
    f, n = fmt(locale), "NW-100234"
    old, new, coming = f.date_range(*OLD), f.date_range(*NEW), f.date_range(*COMING)
    still_coming = say(locale, COMING_MSG, range=coming)
    options = (reply_options(locale, "1", "2", "3"), reply_options(locale, "1", "2", "3", True))
    answer_by = say(locale, "Please answer by %(date)s.", date=f.moment(DEADLINE))
    facts: dict[str, tuple[list[str], list[str]]] = {
        "backordered": (
            [JACKET, POLES, new],
            [say_n(locale, *BACKORDERED_MSG, 2, number=n, range=coming)],
        ),
        "partial_shipment": ([still_coming, BACKPACK, PARCEL, "UPS", JACKET], [still_coming]),
        "shipment_delayed": (
            [f.date(day(11, 24)), f.date(day(11, 27)), PARCEL],
            [say(locale, CARRIER_ETA_MSG, date=f.short_date(day(11, 27)))],
        ),
        "eta_changed": (
            [old, new, say(locale, "later than we said")],
            # The jacket moves; the poles still come on their own dates: the item, not the order.
            [
                (
                    say(locale, ITEM_LATER_MSG, title=JACKET, number=n, new=new, old=old),
                    say(locale, AN_ITEM_LATER_MSG, new=sms_fmt(locale).date_range(*NEW)),
                )
            ],
        ),
        "items_ready": ([JACKET, new], [new]),
        "window_at_risk": (
            [answer_by, NAVY, say(locale, "Keep waiting for it")],
            [options, (CLIPPED, say(locale, "An item in your order will arrive late."))],
        ),
        "window_expired": (
            [answer_by, NAVY, say(locale, "Cancel it and refund me")],
            [options, (CLIPPED, say(locale, "We could not ship an item in your order in time."))],
        ),
        "choice_confirmed": ([say(locale, SWITCHED_MSG, title=NAVY)], [CLIPPED]),
        "shipment_exception": (
            [say(locale, "Lost in transit"), PARCEL],
            [say(locale, LOST_MSG, number=n)],
        ),
    }
    return facts[trigger]


# --- every trigger, channel and locale ------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_email_tells_the_news(renderer: MessageRenderer, trigger: str, locale: str):
    ctx = build_context(trigger, locale=locale, unsubscribe_url=UNSUBSCRIBE_URL)
    email = renderer.email(ctx)
    assert isinstance(email, RenderedEmail)
    assert "\n" not in email.subject
    assert "NW-100234" in email.subject
    text, html = flat(email.text), flat(email.html)
    email_facts, _ = expected_facts(trigger, locale)
    for fact in [*email_facts, "NW-100234", TRACKING_URL, "help@northwind.example"]:
        assert flat(fact) in text, fact
        assert flat(str(escape(fact))) in html, fact
    assert "/s/" not in email.text + email.html  # the short link is for SMS only
    assert f'lang="{locale}"' in email.html
    assert ('dir="rtl"' in email.html) is (locale == "ar")
    optional = trigger in OPTIONAL_EMAIL_TRIGGERS
    stop_emails = say(locale, "Stop ETA update emails")
    assert (UNSUBSCRIBE_URL in email.text) is optional
    assert (f'href="{UNSUBSCRIBE_URL}"' in email.html) is optional
    assert (stop_emails in email.html) is optional


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_sms_tells_the_news(renderer: MessageRenderer, trigger: str, locale: str):
    sms = renderer.sms(build_context(trigger, locale=locale))
    assert isinstance(sms, RenderedSms)
    body = sms.body
    assert body.startswith("Northwind Outfitters:")
    # Only the brief wording of an SMS too long for two segments leaves the number to the link.
    assert "NW-100234" in body or sms.encoding == "UCS-2"
    assert body.splitlines()[-1] == SMS_URL  # the short link comes last
    assert "/t/" not in body
    for fact in expected_facts(trigger, locale)[1]:
        alternatives = (fact,) if isinstance(fact, str) else fact
        assert any(sms_text(one) in " ".join(body.split()) for one in alternatives), fact
    assert "  " not in body
    assert "\n\n" not in body
    assert body == body.strip()
    assert body == normalize_sms(body)
    # Opt-out words are never offered as replies (carriers would unsubscribe the shopper).
    assert not set(re.findall(r"[A-Z]+", body)) & set(OPT_OUT_WORDS)
    assert " A7" not in body  # no short ref unless the number has several orders open
    count = count_segments(body)
    assert (sms.segments, sms.encoding, sms.units) == (count.segments, count.encoding, count.units)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_first_sms_ends_with_how_to_opt_out(renderer: MessageRenderer, trigger: str, locale: str):
    sms = renderer.sms(build_context(trigger, locale=locale, first_sms=True))
    # Only an Arabic choice needs the tight wording, whose opt-out line is a label, to fit.
    tight = locale == "ar" and trigger in ("window_at_risk", "window_expired")
    opt_out = "Opt out: STOP" if tight else "Reply STOP to opt out."
    assert sms.body.splitlines()[-1] == sms_text(say(locale, opt_out))
    assert "STOP" in sms.body.splitlines()[-1]
    assert sms.body.splitlines()[-2] == SMS_URL
    assert sms.segments <= 2


@pytest.mark.parametrize("locale", [locale for locale in LOCALES if locale != "ar"])
@pytest.mark.parametrize("trigger", ["window_at_risk", "window_expired"])
def test_choice_sms_names_the_short_ref_when_several_orders_are_open(
    renderer: MessageRenderer, trigger: str, locale: str
):
    body = renderer.sms(build_context(trigger, locale=locale, several_orders=True)).body
    options = reply_options(locale, "1 A7", "2 A7", "3 A7")
    assert sms_text(options) in " ".join(body.split())


@pytest.mark.parametrize("trigger", ["window_at_risk", "window_expired"])
def test_arabic_choice_sms_leaves_the_short_ref_out_to_fit(renderer: MessageRenderer, trigger: str):
    """Three short refs do not fit two UCS-2 segments: a bare "1" gets asked which order."""
    sms = renderer.sms(build_context(trigger, locale="ar", several_orders=True))
    assert sms.segments == 2
    assert sms_text(reply_options("ar", "1", "2", "3", brief=True)) in " ".join(sms.body.split())
    assert "A7" not in sms.body


def test_english_wording_of_the_key_messages(renderer: MessageRenderer):
    at_risk = renderer.sms(build_context("window_at_risk", several_orders=True)).body
    assert at_risk == (
        "Northwind Outfitters:\n"
        f"{JACKET} (order NW-100234) will arrive late.\n"
        "Reply by Dec 9, 11:59 PM: 1 A7 to keep waiting, 2 A7 for a similar item, 3 A7 for a "
        "refund.\n"
        f"{SMS_URL}"
    )
    partial = renderer.sms(build_context("partial_shipment")).body
    assert "Part of order NW-100234 has shipped with UPS." in partial
    assert "Another package is still coming, expected Dec 3 - 16." in partial
    eta = renderer.email(build_context("eta_changed")).text
    assert "Now: Dec 3\u2009\u2013\u20097 (later than we said)" in eta
    assert "Before: Nov 28\u2009\u2013\u2009Dec 2" in eta


def test_sms_without_a_short_link_carries_the_tracking_link(renderer: MessageRenderer):
    body = renderer.sms(build_context("backordered", sms_url=None)).body
    assert body.splitlines()[-1] == TRACKING_URL


def test_choice_without_an_alternative_offers_two_options(renderer: MessageRenderer):
    ctx = build_context("window_expired")
    choice = replace(ctx.order.choices[0], alternatives=())
    ctx = replace(ctx, order=replace(ctx.order, choices=(choice,)))
    body = renderer.sms(ctx).body
    assert "Reply by Dec 9, 11:59 PM: 1 to keep waiting or 3 for a refund." in body
    assert " 2 " not in body


@pytest.mark.parametrize(
    ("decision", "defaulted", "expected"),
    [
        ("keep", False, "Confirmed: we keep"),
        ("refund", False, "Confirmed: we are cancelling"),
        ("keep", True, "No reply by the deadline, so we keep"),
        ("refund", True, "No reply by the deadline, so we cancelled"),
    ],
)
def test_choice_confirmed_says_what_was_decided(
    renderer: MessageRenderer, decision: str, defaulted: bool, expected: str
):
    data = {"choice": 7, "line": "3", "decision": decision, "defaulted": defaulted}
    ctx = build_context("choice_confirmed", data={"choice_confirmed": data})
    assert expected in renderer.sms(ctx).body
    email = renderer.email(ctx)
    if defaulted:
        assert "We did not hear from you by the deadline" in email.text
        assert email.subject == "An update on your order NW-100234"
    else:
        assert email.subject == "Your choice for order NW-100234 is confirmed"


def test_partial_shipment_without_dates_still_says_a_package_is_coming(
    renderer: MessageRenderer,
):
    ctx = build_context("partial_shipment")
    undated = tuple(
        replace(line, delivery_from=None, delivery_to=None, ship_by=None)
        if line.status == "backordered"
        else line
        for line in ctx.order.lines
    )
    ctx = replace(ctx, order=replace(ctx.order, lines=undated))
    coming = "Another package is still coming. We will tell you when it ships."
    assert coming in renderer.sms(ctx).body
    assert coming in renderer.email(ctx).text


# --- several news in one message ------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
def test_coalesced_message_lists_every_change(renderer: MessageRenderer, locale: str):
    ctx = build_context("window_at_risk", "eta_changed", "partial_shipment", locale=locale)
    email = renderer.email(ctx)
    assert email.subject == renderer.email(build_context("window_at_risk", locale=locale)).subject
    for heading in (
        say(locale, "Your choice for %(title)s", title=JACKET),
        say(locale, "Delivery estimate changed"),
        say(locale, "Shipped"),
    ):
        assert heading in email.text
        assert str(escape(heading)) in email.html
    f = fmt(locale)
    assert flat(f.date_range(day(11, 28), day(12, 2))) in flat(email.text)
    assert "1Z999AA10123456784" in email.html
    body = renderer.sms(ctx).body
    more = say_n(locale, "And one more update.", "And %(num)s more updates.", 2)
    assert body.splitlines()[-2:] == [sms_text(more), SMS_URL]
    if locale == "en":
        assert "And 2 more updates." in body
    # The SMS tells the lead news only.
    assert say(locale, "Part of order %(number)s has shipped.", number="NW-100234") not in body


# --- HTML -----------------------------------------------------------------------------------


def test_html_styles_are_inlined_with_the_theme_tokens(renderer: MessageRenderer):
    html = renderer.email(build_context("backordered")).html
    assert "<style" not in html
    assert re.search(r'<a class="button" href="[^"]+" style="[^"]*background-color: #0b6e4f', html)
    assert re.search(r'<body style="[^"]*color: #1b1f24', html)
    assert html.count('style="') > 10
    logo = re.search(r"<img [^>]*>", html)
    assert logo is not None
    assert 'src="https://cdn.northwind.example/logo.png"' in logo[0]
    assert 'alt="Northwind Outfitters"' in logo[0]


def test_unreadable_theme_tokens_fall_back_to_the_default_look(renderer: MessageRenderer):
    ctx = build_context("backordered")
    tokens = {"accent": "red; } body { display: none", "font_stack": "</style><script>"}
    ctx = replace(ctx, brand=replace(ctx.brand, tokens=tokens, logo_url="http://insecure/x.png"))
    html = renderer.email(ctx).html
    assert "display: none" not in html
    assert "<script>" not in html
    assert "background-color: #1f5fd6" in html
    assert "http://insecure" not in html


def test_each_brand_and_each_change_of_its_tokens_gets_its_own_colours(renderer: MessageRenderer):
    """The checked look is cached by token values: never another brand's, never a stale one."""
    ctx = build_context("backordered")

    def accent(tokens: dict[str, Any]) -> str:
        html = renderer.email(replace(ctx, brand=replace(ctx.brand, tokens=tokens))).html
        found = re.search(r'<a class="button" [^>]*background-color: (#[0-9a-f]{6})', html)
        assert found is not None
        return found[1]

    assert accent({"accent": "#0b6e4f"}) == "#0b6e4f"
    assert accent({"accent": "#8a1c7c"}) == "#8a1c7c"  # the same brand, its accent changed
    assert accent({"accent": "rgb(11, 110, 79)", "text": "#222222"}) == "#0b6e4f"
    assert accent({"accent": ["#8a1c7c"]}) == "#1f5fd6"  # not a string: the default theme's


def test_shop_data_is_escaped_in_html_and_left_alone_in_text(renderer: MessageRenderer):
    title = "<script>alert(1)</script> Jacket & Hood"
    ctx = build_context("window_at_risk", "backordered", jacket=title)
    email = renderer.email(ctx)
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Jacket &amp; Hood" in email.html
    assert title in email.text
    assert title in renderer.sms(build_context("window_at_risk", jacket=title)).body


# --- brand overrides and the sandbox ---------------------------------------------------------


def test_a_brand_override_replaces_the_default(renderer: MessageRenderer):
    overrides = {
        "eta_changed.sms.text": "{{ brand.name }}: fresh dates for {{ order.number }}. "
        "{{ order.tracking_url }}"
    }
    sms = renderer.sms(build_context("eta_changed"), overrides)
    assert sms.body == f"Northwind Outfitters: fresh dates for NW-100234. {TRACKING_URL}"
    assert renderer.sms(build_context("eta_changed")).body != sms.body
    short = {"eta_changed.sms.text": "{{ order.number }}: {{ order.sms_url }}"}
    assert renderer.sms(build_context("eta_changed"), short).body == f"NW-100234: {SMS_URL}"


def test_an_override_can_extend_the_default(renderer: MessageRenderer):
    overrides = {
        "eta_changed.email.html": '{% extends "default:eta_changed.email.html" %}'
        "{% block headline %}Fresh dates, {{ order.customer_name }}{% endblock %}",
        "_news.email.text": '{% extends "default:_news.email.text" %}'
        "{% block eta_changed %}Moved: {{ story.moves[0].line.title }}{% endblock %}",
    }
    email = renderer.email(build_context("eta_changed", "partial_shipment"), overrides)
    assert "Fresh dates, Ana García</h1>" in email.html
    assert "Delivery estimate changed" in email.html  # the default news list is still there
    assert f"Moved: {JACKET}" in email.text
    assert "Another package is still coming" in email.text  # other blocks stay the default's


def test_an_override_of_the_layout_applies_to_every_trigger(renderer: MessageRenderer):
    overrides = {
        "_layout.email.html": '{% extends "default:_layout.email.html" %}'
        "{% block action %}See everything{% endblock %}"
    }
    for trigger in ("backordered", "shipment_delayed"):
        assert "See everything</a>" in renderer.email(build_context(trigger), overrides).html


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ brand.tokens.clear() }}",
        "{{ fmt.timezone.clear_cache() }}",
        "{{ order.lines[0].__init__.__globals__ }}",
    ],
)
def test_the_sandbox_stops_a_malicious_override(
    renderer: MessageRenderer, source: str, monkeypatch: pytest.MonkeyPatch
):
    # The sandbox must stop these, not the clock (a CI run once hit the 200 ms budget first).
    monkeypatch.setattr(render, "TIME_BUDGET_MS", 60_000)
    with pytest.raises(TemplateProblem) as caught:
        renderer.sms(build_context("eta_changed"), {"eta_changed.sms.text": source})
    assert isinstance(caught.value.__cause__, SecurityError)
    with pytest.raises(TemplateProblem, match="unsafe"):
        renderer.check_override("eta_changed.sms.text", source)


def test_the_sandbox_shortcut_only_skips_checks_it_would_pass():
    """Attributes of our own data are answered from a set: the full check must agree."""
    sandbox = ImmutableSandboxedEnvironment()
    for cls, name in _DATA_ATTRIBUTES:
        obj = object.__new__(cls)
        assert sandbox.is_safe_attribute(obj, name, getattr(cls, name, None)), (cls, name)


# Names a template might try on anything: a mapping's methods (which win over its keys), the
# mutating ones an immutable sandbox refuses, str formatting, and the ways out to Python.
TRIED_NAMES = frozenset(
    {
        *("items", "keys", "values", "get", "copy", "update", "pop", "popitem", "setdefault"),
        *("clear", "append", "sort", "format", "format_map", "mro", "nothing_here"),
        *("__class__", "__globals__", "__subclasses__", "__code__", "__func__", "__self__"),
        *("__dict__", "__init__", "__mro__", "__bases__", "__builtins__", "__closure__"),
    }
)
KEYED = {"items": "an items key", "get": "a get key", "format": "a format key", "accent": "#0b6e4f"}


def sandbox_read(env: ImmutableSandboxedEnvironment, obj: Any, name: str) -> tuple[Any, ...]:
    """Return what a template gets for `obj.name`: a value, a sandboxed str format (told apart
    by the method it wraps), or an undefined that fails as unsafe or as missing when used."""
    value = env.getattr(obj, name)
    if isinstance(value, Undefined):
        try:
            str(value)
        except SecurityError as exc:
            return ("refused", str(exc))
        except UndefinedError as exc:
            return ("missing", str(exc))
        raise AssertionError(f"{name}: an undefined that does not fail")
    wrapped = getattr(value, "__wrapped__", None)
    if getattr(wrapped, "__name__", None) in ("format", "format_map"):
        return ("sandboxed format", wrapped)
    return ("value", type(value), value)


def reachable(values: Any) -> list[Any]:
    """Return everything a template can reach by attributes and items from the given values."""
    found: dict[int, Any] = {}
    todo = list(values)
    while todo:
        obj = todo.pop()
        if obj is None or isinstance(obj, bool | int | float) or id(obj) in found:
            continue
        found[id(obj)] = obj
        if is_dataclass(obj) and not isinstance(obj, type):
            todo += [getattr(obj, f.name) for f in fields(obj)]
        elif isinstance(obj, dict | MappingProxyType):
            todo += obj.values()
        elif isinstance(obj, tuple | list):
            todo += obj
    return list(found.values())


def test_the_sandbox_reads_attributes_as_jinjas_does(renderer: MessageRenderer):
    """Our getattr answers our data and mappings from shortcuts: Jinja's own sandbox agrees on
    every name of everything a message's templates can reach, safe, missing or unsafe."""
    ctx = build_context(
        "window_at_risk",
        "eta_changed",
        "partial_shipment",
        "shipment_delayed",
        "choice_confirmed",
        first_sms=True,
        several_orders=True,
    )
    env, values = renderer._prepare(ctx, {})
    plain = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    sms_fmt = SmsFormatter("ar", zoneinfo.ZoneInfo(TIMEZONE), brief=True, numeric=True)
    objects = [
        obj
        for obj in reachable([*values.values(), sms_fmt, FULL, KEYED, MappingProxyType(KEYED)])
        if not isinstance(obj, zoneinfo.ZoneInfo)  # ours refuses more of it: see below
    ]
    # A formatter's methods, which templates call, and what only refused names would reach.
    objects += [MessageContext, str, dict, MessageFormatter.date, values["fmt"].short_date]
    objects += [Markup("<b>%s</b>"), Clip()]
    kinds = {type(obj) for obj in objects}
    assert {MessageContext, LineInfo, ChoiceInfo, ParcelInfo, NewsItem, BrandInfo} <= kinds
    assert {Story, EtaMove, Room, Clip, SmsFormatter, MessageFormatter} <= kinds
    assert {dict, MappingProxyType, tuple, str, Markup, dt.date, dt.datetime} <= kinds
    checked = 0
    for obj in objects:
        names = set(dir(obj)) | TRIED_NAMES
        if isinstance(obj, dict | MappingProxyType):
            names |= {key for key in obj if isinstance(key, str)}
        for name in sorted(names):
            assert sandbox_read(env, obj, name) == sandbox_read(plain, obj, name), (obj, name)
            checked += 1
    assert checked > 5_000

    # What that agreement covers, said outright.
    def read(obj: Any, name: str) -> tuple[Any, ...]:
        return sandbox_read(env, obj, name)

    for obj, name in [
        (ctx, "__class__"),
        (ctx.order.lines[0], "__init__"),
        (MessageFormatter.date, "__globals__"),
        (values["fmt"].short_date, "__func__"),
        (MessageContext, "mro"),
        (str, "mro"),
        (KEYED, "update"),
        (KEYED, "__class__"),
    ]:
        assert read(obj, name)[0] == "refused", (obj, name)
    assert read(KEYED, "items") == ("value", type(KEYED.items), KEYED.items)  # the method wins
    assert read(KEYED, "accent") == ("value", str, "#0b6e4f")  # then the key
    proxy = MappingProxyType(KEYED)
    assert read(proxy, "get") == ("value", type(proxy.get), proxy.get)
    assert read(proxy, "format") == ("value", str, "a format key")
    assert read(KEYED, "nothing_here")[0] == "missing"
    assert read(ctx.order, "number") == ("value", str, "NW-100234")
    # A str's format is not refused but wrapped, by both, in a formatter that checks each field.
    assert read("{0.__class__}", "format")[0] == "sandboxed format"
    with pytest.raises(SecurityError):
        env.getattr("{0.__class__}", "format")(ctx)
    # The one place ours is stricter: a timezone's methods touch caches every brand shares.
    zone = values["fmt"].timezone
    assert read(zone, "key") == ("value", str, TIMEZONE)
    assert read(zone, "clear_cache")[0] == "refused"
    assert sandbox_read(plain, zone, "clear_cache")[0] == "value"


def test_the_callable_shortcut_only_skips_checks_it_would_pass(renderer: MessageRenderer):
    """Our data's methods, gettext and Clip are called without asking: the full check agrees."""
    sandbox = ImmutableSandboxedEnvironment()
    methods = {
        getattr(cls, name)
        for cls, name in _DATA_ATTRIBUTES
        if inspect.isfunction(getattr(cls, name, None))
    }
    assert _QUICK_METHODS.issubset(methods)  # not fmt.join: it joins what it is given
    for method in _QUICK_METHODS:
        assert sandbox.is_safe_callable(method.__get__(object.__new__(SmsFormatter))), method
    env = renderer._environment("fr", {})
    assert env.globals["_"] is env.globals["gettext"]
    assert env.own_callables == {env.globals["gettext"], env.globals["ngettext"]}
    for own in env.own_callables:
        assert sandbox.is_safe_callable(own)
    assert sandbox.is_safe_callable(Clip())


def test_check_override_accepts_good_templates(renderer: MessageRenderer):
    renderer.check_override("eta_changed.sms.text", "{{ brand.name }}: {{ order.tracking_url }}")
    renderer.check_override(
        "_news.email.html",
        '{% extends "default:_news.email.html" %}{% block backordered %}x{% endblock %}',
    )


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("eta_changed.sms.html", "hi", "unknown template 'eta_changed.sms.html'"),
        ("../render.py", "hi", "unknown template"),
        ("eta_changed.sms.text", "{% if %}", "eta_changed.sms.text, line 1"),
        ("eta_changed.email.text", "{{ order.number }", "eta_changed.email.text, line 1"),
        ("eta_changed.sms.text", "{{ order.nothing_here }}", "nothing_here"),
        ("eta_changed.sms.text", '{% include "missing.sms.text" %}', "missing.sms.text"),
    ],
)
def test_check_override_rejects_bad_templates(
    renderer: MessageRenderer, name: str, source: str, message: str
):
    with pytest.raises(TemplateProblem, match=re.escape(message)):
        renderer.check_override(name, source)


def test_overrides_get_their_own_environment(renderer: MessageRenderer):
    plain = renderer.sms(build_context("items_ready")).body
    custom = renderer.sms(build_context("items_ready"), {"items_ready.sms.text": "custom"}).body
    assert custom == "custom"
    assert renderer.sms(build_context("items_ready")).body == plain


def test_a_regional_locale_uses_its_language(renderer: MessageRenderer):
    sms = renderer.sms(build_context("shipment_delayed", locale="es-MX"))
    assert "Un paquete del pedido NW-100234 viene con retraso." in sms.body


def test_a_first_estimate_is_good_news(renderer: MessageRenderer):
    move = {
        "line": "3",
        "direction": "earlier",
        "old": None,
        "new": news_data("eta_changed")["lines"][0]["new"],
    }
    ctx = build_context("eta_changed", data={"eta_changed": {"lines": [move]}})
    body = renderer.sms(ctx).body
    # The poles still come on their own dates: the estimate is the jacket's, not the order's.
    assert "Good news: an item of order NW-100234 now has a delivery estimate: Dec 3 - 7." in body
    assert "Before: no date yet" in renderer.email(ctx).text
    alone = renderer.sms(poles_delivered(ctx)).body
    assert "Good news: order NW-100234 now has a delivery estimate: Dec 3 - 7." in alone


def poles_delivered(ctx: MessageContext) -> MessageContext:
    """Deliver the poles: the jacket is all the order still has to come."""
    lines = tuple(
        replace(line, status="delivered") if line.title == POLES else line
        for line in ctx.order.lines
    )
    return replace(ctx, order=replace(ctx.order, lines=lines))


def both_moved_later() -> dict[str, dict[str, Any]]:
    """Return `eta_changed` data moving the jacket to Dec 3-7 and the poles to Dec 10-16."""
    poles = {
        "line": "4",
        "direction": "later",
        "old": {"ship_by": "2026-12-01", "delivery": ["2026-12-03", "2026-12-07"]},
        "new": {"ship_by": "2026-12-08", "delivery": ["2026-12-10", "2026-12-16"]},
    }
    return {"eta_changed": {"lines": [*news_data("eta_changed")["lines"], poles]}}


@pytest.mark.parametrize("first_sms", [True, False], ids=["first", "later"])
@pytest.mark.parametrize("locale", LOCALES)
def test_an_eta_change_names_the_item_when_the_order_has_more_to_come(
    renderer: MessageRenderer, locale: str, first_sms: bool
):
    """The jacket moves to Dec 3-7, the poles still come Dec 10-16: the order does not move."""
    f, n = fmt(locale), "NW-100234"
    new, old = f.date_range(*NEW), f.date_range(*OLD)
    brief_new = sms_fmt(locale).date_range(*NEW)
    body = " ".join(
        renderer.sms(build_context("eta_changed", locale=locale, first_sms=first_sms)).body.split()
    )
    named = sms_text(say(locale, ITEM_LATER_MSG, title=JACKET, number=n, new=new, old=old))
    an_item = sms_text(say(locale, AN_ITEM_LATER_MSG, new=brief_new))
    assert named in body or an_item in body, body
    if locale != "ar":  # GSM-7 has room for the whole title
        assert named in body
    for claim in (
        say(locale, LATER_MSG, number=n, new=new, old=old),
        say(locale, "Sorry, your order will arrive later: now %(new)s.", new=brief_new),
    ):
        assert sms_text(claim) not in body
    # With the jacket all the order still has to come, the order's own wording stays.
    alone = renderer.sms(poles_delivered(build_context("eta_changed", locale=locale))).body
    full = sms_text(say(locale, LATER_MSG, number=n, new=new, old=old))
    brief = sms_text(
        say(locale, "Sorry, your order will arrive later: now %(new)s.", new=brief_new)
    )
    assert full in " ".join(alone.split()) or brief in " ".join(alone.split())


@pytest.mark.parametrize("locale", LOCALES)
def test_an_eta_change_of_two_items_says_two_items(renderer: MessageRenderer, locale: str):
    ctx = build_context("eta_changed", locale=locale, data=both_moved_later())
    body = " ".join(renderer.sms(ctx).body.split())
    span = fmt(locale).date_range(*COMING)
    brief_span = sms_fmt(locale).date_range(*COMING)
    full = "Sorry, one item of order %(number)s will arrive later: now %(new)s."
    brief = "Sorry, one item of your order will arrive later: now %(new)s."
    plural = {
        full: "Sorry, %(num)s items of order %(number)s will arrive later: now %(new)s.",
        brief: "Sorry, %(num)s items of your order will arrive later: now %(new)s.",
    }
    said = {
        sms_text(say_n(locale, full, plural[full], 2, number="NW-100234", new=span)),
        sms_text(say_n(locale, brief, plural[brief], 2, new=brief_span)),
    }
    assert any(one in body for one in said), body
    assert JACKET not in body
    if locale == "en":
        assert "Sorry, 2 items of order NW-100234 will arrive later: now Dec 3 - 16." in body
    # One of them earlier: no "later" claim for both, only that two estimates changed.
    data = both_moved_later()
    data["eta_changed"]["lines"][1]["direction"] = "earlier"
    mixed = renderer.sms(build_context("eta_changed", data=data)).body
    assert "The delivery estimates of 2 items of order NW-100234 have changed." in mixed


def test_the_eta_email_says_which_items_moved(renderer: MessageRenderer):
    """Every moved item with its dates; the order's estimate only when nothing else is to come."""
    one = renderer.email(build_context("eta_changed")).text
    assert "The delivery estimate for one item of your order NW-100234 has changed." in one
    assert "for your order NW-100234 has changed" not in one
    assert f"- {JACKET} \u00d7 1\n  Now: Dec 3\u2009\u2013\u20097 (later than we said)" in one
    two = renderer.email(build_context("eta_changed", data=both_moved_later())).text
    assert "The delivery estimates for 2 items of your order NW-100234 have changed." in two
    assert f"- {JACKET} \u00d7 1\n  Now: Dec 3\u2009\u2013\u20097 (later than we said)" in two
    assert f"- {POLES} \u00d7 1\n  Now: Dec 10\u2009\u2013\u200916 (later than we said)" in two
    alone = renderer.email(poles_delivered(build_context("eta_changed"))).text
    assert "The delivery estimate for your order NW-100234 has changed." in alone
