"""The shopper answers the at-risk choice on the page: the form posts, the answer stays recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.browser.server import DemoServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

KEPT = "You chose to keep waiting. We will let you know when it ships."


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_keep_waiting_is_confirmed_and_stays_recorded(
    own_server: DemoServer, make_page: Callable[..., Page], javascript: bool
) -> None:
    page = make_page(java_script_enabled=javascript)
    page.goto(own_server.url("D-1005"))
    form = page.locator("form.choice__form")
    choice_id = urlsplit(form.get_attribute("action") or "").path.rsplit("/", 1)[-1]
    form.get_by_label("Keep waiting for it").check()
    with page.expect_navigation():
        form.get_by_role("button", name="Send my choice").click()

    # Where the post landed: the order's page at the answered choice, not an error page.
    landed = urlsplit(page.url)
    assert (landed.path, landed.fragment) == (
        f"/t/{own_server.tokens['D-1005']}",
        f"choice-{choice_id}",
    ), page.locator("main").inner_text()
    confirmation = page.locator(".choice .confirmation")
    assert " ".join(confirmation.inner_text().split()) == KEPT
    assert confirmation.get_attribute("role") == "status"
    assert page.locator("form.choice__form").count() == 0

    again = make_page(java_script_enabled=javascript)
    again.goto(own_server.url("D-1005"))
    assert again.locator("form.choice__form").count() == 0
    assert again.get_by_role("radio").count() == 0
    heading = " ".join(again.locator(".choice h2").inner_text().split())
    assert heading == "Your choice for Espresso machine is recorded"
    assert " ".join(again.locator(".choice .confirmation").inner_text().split()) == KEPT
