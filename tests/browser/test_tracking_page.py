"""What a shopper sees on the tracking page in a real browser: parcels, waiting items, choices."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.browser.server import DemoServer

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, FloatRect, Locator, Page


def texts(locator: Locator) -> list[str]:
    """The visible text of each match, with runs of white space folded."""
    return [" ".join(text.split()) for text in locator.all_inner_texts()]


def box(locator: Locator) -> FloatRect:
    """Where an element is drawn (it must be drawn)."""
    found = locator.bounding_box()
    assert found is not None, f"{locator} is not rendered"
    return found


def parcels(page: Page) -> Locator:
    return page.locator("section[aria-labelledby=parcels-title] article.parcel")


def still_to_come(page: Page) -> Locator:
    return page.locator("section").filter(has=page.get_by_role("heading", name="Still to come"))


def check_split_order(page: Page) -> None:
    """D-1001: two parcels (one moving, one delivered), the lamp still to come, the summary."""
    assert texts(page.locator("h1")) == ["Order D-1001"]
    (glance,) = texts(page.locator(".glance"))
    assert re.search(r"\b2\b.*\bof 4\b.*\bdelivered\b", glance), glance
    assert "1 parcel on its way" in glance
    assert "1 item waiting for stock" in glance
    assert "is still coming" in page.locator(".order-head .notice").inner_text()
    assert texts(page.locator("#parcels-title")) == ["Your 2 parcels"]

    cards = parcels(page)
    assert cards.count() == 2
    heads = texts(cards.locator("h3"))
    badges = texts(cards.locator(".parcel__head .badge"))
    by_carrier = {head.split(" · ")[-1]: badge for head, badge in zip(heads, badges, strict=True)}
    assert by_carrier == {"USPS": "On its way", "UPS": "Delivered"}
    moving = cards.filter(has_text="USPS")
    assert "Organic tee, size M" in moving.inner_text()
    assert "9400111899223856928499" in moving.inner_text()
    delivered = cards.filter(has_text="UPS").filter(has_not_text="USPS")
    assert "Stoneware mug, blue" in delivered.inner_text()
    assert "Delivered on" in delivered.inner_text()

    waiting = still_to_come(page)
    assert waiting.count() == 1
    assert texts(waiting.locator(".item__title")) == ["Oak desk lamp"]
    why = texts(waiting.locator(".item__why"))
    assert len(why) == 1
    assert why[0].startswith("Back in stock around ")
    assert texts(waiting.locator(".eta"))[0].startswith("Estimated delivery ")


def check_choice_form(page: Page) -> None:
    """D-1005: the at-risk espresso machine asks keep / switch (two alternatives) / refund."""
    form = page.locator("form.choice__form")
    assert form.count() == 1
    assert form.is_visible()
    assert "Your choice for Espresso machine" in page.locator(".choice h2").inner_text()
    options = texts(form.locator("label.option"))
    assert options == [
        "Keep waiting for it",
        "Switch to Compact espresso machine · $449.00",
        "Switch to Stovetop moka pot, 6 cups · $59.00",
        "Cancel it and refund me",
    ]
    assert form.get_by_role("radio").count() == 4
    assert form.get_by_role("button", name="Send my choice").is_visible()


def test_split_order_shows_both_parcels_what_is_still_to_come_and_the_summary(
    demo_server: DemoServer, page: Page
) -> None:
    page.goto(demo_server.url("D-1001"))
    check_split_order(page)


def test_at_risk_line_shows_the_choice_form(demo_server: DemoServer, page: Page) -> None:
    page.goto(demo_server.url("D-1005"))
    check_choice_form(page)
    waiting = still_to_come(page)
    assert "Later than we promised" in waiting.inner_text()


def test_indefinite_backorder_has_no_date_and_says_cancel_is_possible(
    demo_server: DemoServer, page: Page
) -> None:
    page.goto(demo_server.url("D-1007"))
    waiting = still_to_come(page)
    assert texts(waiting.locator("h3")) == ["No date yet"]
    why = waiting.locator(".item__why").inner_text()
    assert "No date yet" in why
    assert "You can cancel at any time." in why


@pytest.mark.parametrize("number", ["D-1001", "D-1005"])
def test_page_loads_without_script_errors_or_blocked_resources(
    demo_server: DemoServer, page: Page, number: str
) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    statuses: dict[str, int] = {}
    page.on("response", lambda r: statuses.__setitem__(r.url, r.status))
    with page.expect_response(lambda r: "/events" in r.url) as stream:
        page.goto(demo_server.url(number))
    assert stream.value.status == 200
    assert stream.value.headers["content-type"].startswith("text/event-stream")
    page.evaluate("document.fonts.ready")
    assert problems == []
    assert {url: code for url, code in statuses.items() if code >= 400} == {}
    # Both stylesheets applied under the page's CSP: the cards have their themed border.
    border = page.locator(".card").first.evaluate("e => getComputedStyle(e).borderTopStyle")
    assert border == "solid"


def test_without_javascript_everything_current_is_on_the_page(
    demo_server: DemoServer, make_page: Callable[..., Page]
) -> None:
    page = make_page(java_script_enabled=False)
    page.goto(demo_server.url("D-1001"))
    check_split_order(page)
    history = parcels(page).filter(has_text="USPS").locator("details.timeline")
    assert history.get_attribute("open") is not None
    assert "Departed regional facility" in history.inner_text()

    page.goto(demo_server.url("D-1005"))
    check_choice_form(page)
    assert "Being prepared" in page.locator("#main").inner_text()


def test_arabic_page_is_right_to_left_and_mirrored(demo_server: DemoServer, page: Page) -> None:
    page.goto(demo_server.url("D-1001", lang="ar"))
    html = page.locator("html")
    assert html.get_attribute("dir") == "rtl"
    assert html.get_attribute("lang") == "ar"

    # The header bar: the brand name starts on the right, the support links sit left of it.
    brand = box(page.locator(".brand-bar .brand-name"))
    support = box(page.locator(".brand-bar .support"))
    bar = box(page.locator(".brand-bar__inner"))
    assert brand["x"] > support["x"] + support["width"] - 1
    assert abs((brand["x"] + brand["width"]) - (bar["x"] + bar["width"])) < 40

    # Item rows flow right to left: the title is right of the quantity.
    row = parcels(page).first.locator(".item").first
    title = box(row.locator(".item__title"))
    qty = box(row.locator(".item__qty"))
    assert title["x"] > qty["x"] + qty["width"] - 1

    # The heading hugs the right edge of the page column, and the notice's rule is on the right.
    main = box(page.locator("#main"))
    heading = box(page.locator("h1"))
    assert (main["x"] + main["width"]) - (heading["x"] + heading["width"]) < 40
    notice = page.locator(".notice")
    assert notice.evaluate("e => getComputedStyle(e).borderRightWidth") == "4px"
    assert notice.evaluate("e => getComputedStyle(e).borderLeftWidth") == "0px"

    # The tracking number stays left to right inside the Arabic text.
    number = parcels(page).first.locator(".parcel__tracking [dir=ltr]")
    assert number.evaluate("e => getComputedStyle(e).direction") == "ltr"


def test_lookup_by_number_and_postal_code_opens_the_tracking_page(
    demo_server: DemoServer, page: Page
) -> None:
    page.goto(f"{demo_server.base_url}/demo/track")
    page.get_by_label("Order number").fill("D-1001")
    page.get_by_label("Email address or postal code").fill("94607")
    with page.expect_navigation():
        page.get_by_role("button", name="Find my order").click()
    landed = urlsplit(page.url).path
    assert landed == f"/t/{demo_server.tokens['D-1001']}", page.locator("main").inner_text()
    check_split_order(page)
