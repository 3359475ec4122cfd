"""An open tracking page follows the order: changes made through the API appear without a reload."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from babel.dates import format_date

from tests.browser.server import DemoServer

if TYPE_CHECKING:
    from playwright.sync_api import Frame, Page

PROMPT_MS = 2000
WAITING = "section:has(#waiting-title)"


def open_live(server: DemoServer, page: Page, number: str) -> list[str]:
    """Open an order's page with its event stream connected; return a log of navigations."""
    navigations: list[str] = []

    def on_navigated(frame: Frame) -> None:
        if frame == page.main_frame:
            navigations.append(frame.url)

    with page.expect_response(lambda r: "/events" in r.url) as stream:
        page.goto(server.url(number))
    assert stream.value.status == 200
    page.on("framenavigated", on_navigated)
    page.evaluate("window.__stillTheSamePage = true")
    return navigations


def assert_not_reloaded(page: Page, navigations: list[str]) -> None:
    assert navigations == []
    assert page.evaluate("window.__stillTheSamePage === true")


def section_text(page: Page, selector: str) -> str:
    return " ".join(page.locator(selector).inner_text().split())


def test_moving_an_inbound_date_updates_still_to_come_without_a_reload(
    own_server: DemoServer, make_page: Callable[..., Page]
) -> None:
    page = make_page()
    navigations = open_live(own_server, page, "D-1001")
    supply = own_server.api("GET", "/skus/LAMP-OAK/supply")
    assert supply.status_code == 200, supply.text
    (row,) = [r for r in supply.json()["data"] if r["ref"] == "PO-7731"]
    old = dt.date.fromisoformat(row["expected_date"])
    new = old + dt.timedelta(days=20)
    old_text = f"Back in stock around {format_date(old, 'medium', locale='en')}."
    new_text = f"Back in stock around {format_date(new, 'medium', locale='en')}."
    assert old_text in section_text(page, WAITING)

    moved = own_server.api(
        "PATCH", "/skus/LAMP-OAK/supply/PO-7731", {"expected_date": new.isoformat()}
    )
    assert moved.status_code == 200, moved.text
    sent = time.monotonic()
    page.wait_for_function(
        """([selector, text]) => {
            const section = document.querySelector(selector);
            return section !== null && section.textContent.replace(/\\s+/g, " ").includes(text);
        }""",
        arg=[WAITING, new_text],
        timeout=PROMPT_MS,
    )
    assert time.monotonic() - sent < PROMPT_MS / 1000
    assert old_text not in section_text(page, WAITING)
    assert_not_reloaded(page, navigations)


def test_a_new_checkpoint_appears_in_the_parcels_history_without_a_reload(
    own_server: DemoServer, make_page: Callable[..., Page]
) -> None:
    page = make_page()
    navigations = open_live(own_server, page, "D-1001")
    usps = page.locator("article.parcel", has_text="USPS")
    assert "On its way" in usps.locator(".badge").first.inner_text()

    description = "Out for delivery from the Oakland station"
    added = own_server.api(
        "POST",
        "/orders/D-1001/shipments/P2/checkpoints",
        {
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
            "status": "out_for_delivery",
            "description": description,
            "city": "Oakland",
            "region": "CA",
            "country": "US",
        },
    )
    assert added.status_code == 201, added.text
    page.wait_for_function(
        """text => [...document.querySelectorAll("#live article.parcel details.timeline li")]
            .some(li => li.textContent.includes(text))""",
        arg=description,
        timeout=PROMPT_MS,
    )
    history = usps.locator("details.timeline")
    assert history.get_attribute("open") is not None
    entries = [" ".join(t.split()) for t in history.locator("li").all_inner_texts()]
    assert len(entries) == 2
    assert any(description in e and "Oakland, CA, US" in e for e in entries)
    assert any("Departed regional facility" in e for e in entries)
    assert usps.locator(".badge").first.inner_text() == "Out for delivery"
    assert_not_reloaded(page, navigations)
