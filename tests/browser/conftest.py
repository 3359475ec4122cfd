"""Browser fixtures: the demo behind a real `whereabouts serve`, seen through Debian's Chromium.

The demo is loaded once per run by `whereabouts demo --no-serve` into a template SQLite file; each
server gets its own copy and runs as `python -m app.cli serve --no-migrate` on a free port of
127.0.0.1. Read-only tests share `demo_server`; a test that changes data takes `own_server`.

Playwright drives /usr/bin/chromium (never a browser of its own). Outside CI a missing
Chromium, playwright package or node_modules/axe-core skips the tests that need it, with one line
saying what is missing; under CI=true it fails them. Everything here is package-scoped, so the
sync Playwright loop is gone before the async tests of other packages run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.browser.server import ROOT, DemoData, DemoServer, check_log, load_demo, start, stop

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 5000


def missing(what: str) -> NoReturn:
    """Skip outside CI, fail under CI=true: in CI every piece must be installed."""
    if IN_CI:
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(f"browser tests skipped: {what}")


# The demo and its servers ---------------------------------------------------------------


@pytest.fixture(scope="package")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return load_demo(tmp_path_factory.mktemp("demo-template"))


@pytest.fixture(scope="package")
def demo_server(
    demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoServer]:
    """One server for tests that only read."""
    server = start(demo_data, tmp_path_factory.mktemp("shared-server"))
    yield server
    stop(server)
    check_log(server)


@pytest.fixture
def own_server(demo_data: DemoData, tmp_path: Path) -> Iterator[DemoServer]:
    """A server over a fresh copy of the demo, for a test that changes data.

    Request it before `make_page`, so pages (and their event streams) close first.
    """
    server = start(demo_data, tmp_path / "server")
    yield server
    stop(server)
    check_log(server)


# The browser -------------------------------------------------------------------------------


@pytest.fixture(scope="package", autouse=True)
def _browser_installed() -> None:
    """Check for Chromium and Playwright before any server starts."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright package is not installed (pip install playwright==1.65.2)")


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    from playwright.sync_api import sync_playwright

    runner = sync_playwright().start()
    yield runner
    runner.stop()


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless; Playwright gives it a fresh temporary profile each launch."""
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
    )
    yield chromium
    chromium.close()


@pytest.fixture
def make_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open a page in a new browser context; the options go to `browser.new_context`."""
    contexts = []

    def make(**options: Any) -> Page:
        options.setdefault("viewport", {"width": 1280, "height": 900})
        options.setdefault("locale", "en-US")
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(make_page: Callable[..., Page]) -> Page:
    """A desktop page (1280 by 900) with JavaScript on."""
    return make_page()


@pytest.fixture(scope="package")
def axe_source() -> Path:
    if not AXE.exists():
        missing(f"{AXE.relative_to(ROOT)} is missing (npm install --no-audit --no-fund)")
    return AXE


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
