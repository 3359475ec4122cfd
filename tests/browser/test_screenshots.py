"""Phone and desktop screenshots of the richest orders, saved in tests/artifacts/ for review."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.devices import DESKTOP, PHONE
from tests.browser.server import DemoServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking it is a PNG)."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.parametrize(
    ("number", "lang", "device"),
    [
        ("D-1001", None, "phone"),
        ("D-1001", None, "desktop"),
        ("D-1005", None, "phone"),
        ("D-1005", None, "desktop"),
        ("D-1001", "ar", "phone"),
    ],
)
def test_full_page_screenshot(
    demo_server: DemoServer,
    make_page: Callable[..., Page],
    artifacts: Path,
    number: str,
    lang: str | None,
    device: str,
) -> None:
    options = PHONE if device == "phone" else DESKTOP
    page = make_page(**options)
    page.goto(demo_server.url(number, lang=lang))
    page.evaluate("document.fonts.ready")
    path = artifacts / f"{number}{'-' + lang if lang else ''}-{device}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)

    width, height = png_size(path)
    scale = options["device_scale_factor"]
    assert width == options["viewport"]["width"] * scale
    assert height >= options["viewport"]["height"] * scale
    assert path.stat().st_size > 20_000, "an almost empty picture: did the page render?"
