"""axe-core on the shopper's pages: no serious or critical violations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.server import ROOT, DemoServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

BLOCKING = {"serious", "critical"}
PINNED_AXE = json.loads((ROOT / "package.json").read_text())["devDependencies"]["axe-core"]
PAGES: dict[str, Callable[[DemoServer], str]] = {
    "D-1001": lambda server: server.url("D-1001"),
    "D-1005-choice-form": lambda server: server.url("D-1005"),
    "lookup": lambda server: f"{server.base_url}/demo/track",
    "D-1001-arabic": lambda server: server.url("D-1001", lang="ar"),
}


def describe(violations: list[dict[str, Any]]) -> str:
    """One paragraph per rule: impact, rule, what it asks, and each offending element."""
    out = []
    for v in violations:
        out.append(f"[{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"]:
            target = " ".join(str(t) for t in node["target"])
            summary = " ".join(node.get("failureSummary", "").split())
            out.append(f"    {target}\n      {node['html'][:160]}\n      {summary}")
    return "\n".join(out)


@pytest.mark.parametrize("name", list(PAGES))
def test_no_serious_or_critical_axe_violations(
    axe_source: Path, demo_server: DemoServer, make_page: Callable[..., Page], name: str
) -> None:
    # The pages allow only their own nonce'd script; let the test inject axe.
    page = make_page(bypass_csp=True)
    page.goto(PAGES[name](demo_server))
    page.evaluate("document.fonts.ready")
    page.add_script_tag(path=str(axe_source))
    results = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    assert results["testEngine"]["version"] == PINNED_AXE
    assert len(results["passes"]) > 10, "axe checked next to nothing: is the page there?"
    blocking = [v for v in results["violations"] if v["impact"] in BLOCKING]
    assert blocking == [], f"axe found on {name}:\n{describe(blocking)}"
