"""Caching: ETags follow the order's version and the language; the brand CSS follows the theme."""

from __future__ import annotations

import re

import pytest

from tests.web.support import add_checkpoint, parse, patch_brand

pytestmark = pytest.mark.anyio
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_etag_follows_the_order_and_the_language(client, demo):
    path = demo.page("D-1001")
    first = await client.get(path)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    # Unchanged: 304 without a body, with the same validator.
    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    # Another language is another representation.
    french = await client.get(path + "?lang=fr")
    assert french.headers["etag"] != etag
    assert (await client.get(path + "?lang=fr", headers={"If-None-Match": etag})).status_code == 200
    assert (
        await client.get(path + "?lang=fr", headers={"If-None-Match": french.headers["etag"]})
    ).status_code == 304
    # The order changes: the old validator no longer matches and the new content is served.
    await add_checkpoint(client, demo, "Arrived at the Oakland delivery station")
    changed = await client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert "Arrived at the Oakland delivery station" in changed.text
    live = parse(changed.text).by_id("live")
    assert int(live.attrs["data-version"]) > int(
        parse(first.text).by_id("live").attrs["data-version"]
    )
    assert (
        await client.get(path, headers={"If-None-Match": changed.headers["etag"]})
    ).status_code == 304
    french_after = await client.get(
        path + "?lang=fr", headers={"If-None-Match": french.headers["etag"]}
    )
    assert french_after.status_code == 200
    assert "Arrived at the Oakland delivery station" in french_after.text


async def test_json_etag_follows_the_order(client, demo):
    path = demo.page("D-1001") + ".json"
    first = await client.get(path)
    etag = first.headers["etag"]
    unchanged = await client.get(path, headers={"If-None-Match": etag})
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    await add_checkpoint(client, demo, "Sorted at the local depot")
    changed = await client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["order"]["version"] > first.json()["order"]["version"]
    scans = [scan["description"] for scan in changed.json()["order"]["parcels"][0]["scans"]]
    assert scans[0] == "Sorted at the local depot"


def stylesheet_url(html):
    links = [link.attrs["href"] for link in parse(html).find_all("link", rel="stylesheet")]
    (brand_css,) = [href for href in links if href.startswith("/b/demo/theme.css")]
    return brand_css


def custom_properties(css):
    root = re.search(r":root\s*\{(.*?)\}", css, re.S)
    assert root, css[:200]
    return dict(re.findall(r"(--wa-[a-z-]+):\s*([^;]+);", root.group(1)))


@SQLITE
async def test_brand_css_carries_tokens_and_custom_css_and_changes_with_them(client, demo):
    page = await client.get(demo.page("D-1001"))
    url = stylesheet_url(page.text)
    css = await client.get(url)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "immutable" in css.headers["cache-control"]
    tokens = custom_properties(css.text)
    assert tokens["--wa-background"] == "#ffffff"
    assert tokens["--wa-text"] == "#1b1f24"
    assert tokens["--wa-radius"] == "12px"
    assert "--wa-logo" not in tokens
    changed = await patch_brand(
        client,
        demo,
        theme_tokens={"accent": "#0b5d1e", "radius": "4px"},
        custom_css=".wa-page h1 { letter-spacing: 0.02em; }",
    )
    assert changed.status_code == 200, changed.text
    after = await client.get(demo.page("D-1001"))
    assert after.headers["etag"] != page.headers["etag"]
    new_url = stylesheet_url(after.text)
    assert new_url != url
    new_css = await client.get(new_url)
    assert "immutable" in new_css.headers["cache-control"]
    new_tokens = custom_properties(new_css.text)
    assert (new_tokens["--wa-accent"], new_tokens["--wa-radius"]) == ("#0b5d1e", "4px")
    assert new_tokens["--wa-background"] == "#ffffff"
    assert ".wa-page h1 {\n  letter-spacing: 0.02em;\n}" in new_css.text
    # The old address must not be cached for good any more: it no longer names this version.
    stale = await client.get(url)
    assert "immutable" not in stale.headers["cache-control"]


@SQLITE
async def test_validators_change_when_the_brand_details_on_the_page_change(client, demo):
    page = await client.get(demo.page("D-1001"))
    data = await client.get(demo.page("D-1001") + ".json")
    changed = await patch_brand(
        client,
        demo,
        name="Northwind Home & Garden",
        support_email="care@northwind.example",
        support_url="https://northwind.example/care",
    )
    assert changed.status_code == 200, changed.text
    fresh = await client.get(demo.page("D-1001"))
    assert "Northwind Home &amp; Garden" in fresh.text
    assert "care@northwind.example" in fresh.text
    revalidated = await client.get(
        demo.page("D-1001"), headers={"If-None-Match": page.headers["etag"]}
    )
    assert revalidated.status_code == 200, "a stale page would keep the old name and contacts"
    assert "care@northwind.example" in revalidated.text
    json_again = await client.get(
        demo.page("D-1001") + ".json", headers={"If-None-Match": data.headers["etag"]}
    )
    assert json_again.status_code == 200
    assert json_again.json()["brand"]["name"] == "Northwind Home & Garden"
    assert json_again.json()["brand"]["support_url"] == "https://northwind.example/care"
