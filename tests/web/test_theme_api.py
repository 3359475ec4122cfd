"""The brand's look through PATCH /api/v1/brand: theme, contrast-checked tokens, sanitized CSS."""

from __future__ import annotations

import pytest

from tests.api.helpers import assert_problem
from tests.web.support import parse, patch_brand

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def wcag_ratio(foreground: str, background: str) -> float:
    """WCAG 2.x contrast ratio of two #rrggbb colours (computed here, independently)."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def brand_css(client):
    page = parse((await client.get("/demo/track")).text)
    (href,) = [
        link.attrs["href"]
        for link in page.find_all("link", rel="stylesheet")
        if link.attrs["href"].startswith("/b/demo/theme.css")
    ]
    return href, (await client.get(href)).text


async def test_switching_to_harbor_changes_the_page(client, demo):
    before = (await client.get(demo.page("D-1001"))).text
    assert parse(before).find_all(cls="harbor-banner") == []
    changed = await patch_brand(client, demo, theme="harbor")
    assert changed.status_code == 200, changed.text
    assert changed.json()["theme"] == "harbor"
    page = parse((await client.get(demo.page("D-1001"))).text)
    (banner,) = page.find_all("div", cls="harbor-banner")
    assert banner.text == "Northwind Home"
    assert banner.attrs.get("aria-hidden") == "true"
    assert page.by_id("order-title").text == "Order D-1001"  # the default templates still serve
    href, css = await brand_css(client)
    assert "?v=harbor.2." in href
    assert ".harbor-banner" in css
    assert "--wa-background: #f4efe6;" in css
    assert "harbor-banner" in (await client.get("/demo/track")).text


async def test_an_unknown_theme_is_refused(client, demo):
    href, css = await brand_css(client)
    refused = await patch_brand(client, demo, theme="nope")
    body = assert_problem(refused, 422, "invalid-fields", ["theme"])
    assert "default" in body["errors"][0]["message"]
    assert "harbor" in body["errors"][0]["message"]
    assert await brand_css(client) == (href, css)


async def test_a_token_colour_below_wcag_aa_is_refused_with_its_ratio(client, demo):
    href, css = await brand_css(client)
    refused = await patch_brand(client, demo, theme_tokens={"text": "#777777"})
    body = assert_problem(refused, 422, "invalid-fields")
    assert {error["path"] for error in body["errors"]} == {"theme_tokens.text"}
    messages = [error["message"] for error in body["errors"]]
    ratio = wcag_ratio("#777777", "#ffffff")  # text on the default white background: 4.48
    assert 4.47 < ratio < 4.5
    (on_white,) = [m for m in messages if "#ffffff" in m]
    assert f"{ratio:.2f}:1" in on_white
    assert "4.5:1" in on_white
    assert "#777777" in on_white
    assert all("4.5:1" in m for m in messages)
    assert await brand_css(client) == (href, css)
    # Just enough contrast passes.
    accepted = await patch_brand(client, demo, theme_tokens={"text": "#595959"})
    assert accepted.status_code == 200, accepted.text
    assert "--wa-text: #595959;" in (await brand_css(client))[1]


async def test_token_values_that_are_not_colours_never_reach_the_stylesheet(client, demo):
    href, css = await brand_css(client)
    escape = "red; } body { background: url(https://evil.example/x.png) } :root { --x: red"
    tokens = ("text", "accent", "success", "border", "radius", "font_stack")
    statuses = {}
    for token in tokens:
        response = await patch_brand(client, demo, theme_tokens={token: escape})
        statuses[token] = response.status_code
        if response.status_code == 422:
            assert_problem(response, 422, "invalid-fields", [f"theme_tokens.{token}"])
    served = await brand_css(client)
    assert "evil.example" not in served[1]
    assert statuses == dict.fromkeys(tokens, 422)
    assert served == (href, css)


async def test_custom_css_is_sanitized_and_what_was_removed_is_listed(client, demo):
    source = (
        "@import url(https://evil.example/x.css);\n"
        ".wa-page h1 { color: #123456; }\n"
        ".box { width: expression(alert(1)); color: #224466; }\n"
        ".hero { background-image: url(https://evil.example/a.png); margin: 4px; }\n"
        ".logo { background-image: url(https://cdn.brand.example/logo.png); }\n"
        "</style><script>alert(1)</script>\n"
    )
    changed = await patch_brand(
        client, demo, custom_css=source, asset_origins=["https://cdn.brand.example"]
    )
    assert changed.status_code == 200, changed.text
    removed = changed.json()["custom_css_removed"]
    assert len(removed) == 4, removed
    assert any("@import" in reason for reason in removed), removed
    assert any("expression" in reason for reason in removed), removed
    assert any("url()" in reason and "line 4" in reason for reason in removed), removed
    assert any(reason.startswith("line 6") for reason in removed), removed
    stored = changed.json()["custom_css"]
    href, css = await brand_css(client)
    assert "?v=default.2." in href
    assert stored in css
    lowered = css.lower()
    for gone in ("@import", "expression(", "</style", "<script", "evil.example", "alert("):
        assert gone not in lowered, gone
    assert ".wa-page h1 {\n  color: #123456;\n}" in css
    assert ".box {\n  color: #224466;\n}" in css
    assert ".hero {\n  margin: 4px;\n}" in css
    assert 'url("https://cdn.brand.example/logo.png")' in css
    # Stored clean, so reading the brand back shows the same CSS and no new removals.
    read = await client.get("/api/v1/brand", headers=demo.headers)
    assert read.json()["custom_css"] == stored
    assert read.json()["custom_css_removed"] == []


async def test_removing_an_asset_origin_stops_the_custom_css_loading_from_it(client, demo):
    css_with_asset = ".hero { background-image: url(https://cdn.brand.example/hero.png); }"
    first = await patch_brand(
        client, demo, custom_css=css_with_asset, asset_origins=["https://cdn.brand.example"]
    )
    assert first.status_code == 200, first.text
    assert "https://cdn.brand.example/hero.png" in (await brand_css(client))[1]
    withdrawn = await patch_brand(client, demo, asset_origins=[])
    if withdrawn.status_code == 200:
        assert "cdn.brand.example" not in (await brand_css(client))[1]
    else:  # or the change is refused while the CSS still needs the origin
        assert_problem(withdrawn, 422, "invalid-fields")
