"""The page holds together on a phone: nothing sticks out of its card, controls keep their shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.browser.devices import PHONE, PHONE_WIDTH
from tests.browser.server import DemoServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

OUTSIDE_ITS_CARD = """() => {
    const name = e => [e.tagName.toLowerCase(), ...e.classList].join(".");
    const found = [];
    for (const card of document.querySelectorAll(".card")) {
        const s = getComputedStyle(card);
        const box = card.getBoundingClientRect();
        const left = box.left + parseFloat(s.borderLeftWidth) + parseFloat(s.paddingLeft);
        const right = box.right - parseFloat(s.borderRightWidth) - parseFloat(s.paddingRight);
        for (const e of card.querySelectorAll("*")) {
            const r = e.getBoundingClientRect();
            if (r.width > 0 && (r.left < left - 1 || r.right > right + 1)) {
                const text = e.textContent.trim().replace(/\\s+/g, " ").slice(0, 40);
                const [x0, x1, c0, c1] = [r.left, r.right, left, right].map(Math.round);
                found.push(`${name(e)} "${text}" spans ${x0}..${x1}, ${name(card)} ${c0}..${c1}`);
            }
        }
    }
    return found;
}"""


@pytest.mark.parametrize("lang", [None, "ar"], ids=["en", "ar"])
@pytest.mark.parametrize("number", ["D-1001", "D-1005"])
def test_on_a_phone_nothing_sticks_out_of_its_card(
    demo_server: DemoServer, make_page: Callable[..., Page], number: str, lang: str | None
) -> None:
    page = make_page(**PHONE)
    page.goto(demo_server.url(number, lang=lang))
    page.evaluate("document.fonts.ready")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    assert page.evaluate(OUTSIDE_ITS_CARD) == []


@pytest.mark.parametrize("lang", [None, "ar"], ids=["en", "ar"])
def test_on_a_phone_every_choice_has_the_same_round_radio_button(
    demo_server: DemoServer, make_page: Callable[..., Page], lang: str | None
) -> None:
    page = make_page(**PHONE)
    page.goto(demo_server.url("D-1005", lang=lang))
    sizes = [
        (round(box["width"], 1), round(box["height"], 1))
        for box in (
            radio.bounding_box() for radio in page.locator(".choice input[type=radio]").all()
        )
        if box
    ]
    assert len(sizes) == 4
    labels = [" ".join(t.split()) for t in page.locator(".choice label.option").all_inner_texts()]
    assert len(set(sizes)) == 1, f"radio sizes differ: {dict(zip(labels, sizes, strict=True))}"
    width, height = sizes[0]
    assert width == height >= 16
