"""Security headers on every shopper-facing HTML response; the nonce is fresh and matches."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from tests.web.support import FORM, SAME_ORIGIN, csp, form_csrf, parse, patch_brand

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
NONCE = re.compile(r"^'nonce-([A-Za-z0-9_-]{22,})'$")


def check_html_response(response, frame_ancestors="'none'"):
    """Check one HTML response's headers and markup; return its nonce."""
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "noindex" in [v.strip() for v in response.headers["x-robots-tag"].split(",")]
    policy = csp(response)
    assert policy["default-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == frame_ancestors
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    match = NONCE.match(policy["script-src"])
    assert match, policy["script-src"]
    nonce = match.group(1)
    page = parse(response.text)
    for script in page.find_all("script"):
        assert script.attrs.get("nonce") == nonce, script.attrs
    assert "__WA_NONCE__" not in response.text
    # Nothing the policy would block or that would run without the nonce.
    for node in page.iter():
        assert not [name for name in node.attrs if name.startswith("on")], node.attrs
        for name in ("href", "src", "action"):
            assert not (node.attrs.get(name) or "").strip().lower().startswith("javascript:")
        assert "style" not in node.attrs, node.attrs
    assert page.find_all("style") == []
    return nonce


async def test_every_html_response_carries_the_headers_and_a_fresh_nonce(client, demo):
    d1005 = demo.page("D-1005")
    form_page = await client.get(d1005)
    csrf = form_csrf(form_page.text)
    action = parse(form_page.text).find("section", cls="choice").find("form").attrs["action"]
    lookup_form = await client.get("/demo/track")
    lookup_csrf = form_csrf(lookup_form.text, "/demo/track")
    responses = {
        "page": await client.get(demo.page("D-1001")),
        "page again": await client.get(demo.page("D-1001")),
        "page with a form": form_page,
        "page in arabic": await client.get(d1005 + "?lang=ar"),
        "lookup": lookup_form,
        "lookup miss": await client.post(
            "/demo/track",
            content=urlencode({"csrf": lookup_csrf, "number": "D-1001", "contact": "x@y.z"}),
            headers={"Content-Type": FORM, **SAME_ORIGIN},
        ),
        "lookup expired form": await client.post(
            "/demo/track",
            content=urlencode({"csrf": "1.2", "number": "D-1001", "contact": "x@y.z"}),
            headers={"Content-Type": FORM, **SAME_ORIGIN},
        ),
        "unknown link": await client.get("/t/" + "Q" * 32),
        "malformed link": await client.get("/t/nope"),
        "unknown brand": await client.get("/nope/track"),
        "choice refused": await client.post(
            action,
            content=urlencode({"csrf": "0.0", "decision": "keep"}),
            headers={"Content-Type": FORM, **SAME_ORIGIN},
        ),
        "choice invalid": await client.post(
            action,
            content=urlencode({"csrf": csrf, "decision": "switch:NOPE"}),
            headers={"Content-Type": FORM, **SAME_ORIGIN},
        ),
    }
    expected_status = {
        "lookup expired form": 403,
        "unknown link": 404,
        "malformed link": 404,
        "unknown brand": 404,
        "choice refused": 403,
        "choice invalid": 422,
    }
    nonces = []
    for name, response in responses.items():
        assert response.status_code == expected_status.get(name, 200), name
        nonces.append(check_html_response(response))
    assert len(set(nonces)) == len(nonces), "a nonce was used twice"
    for name in ("page", "page again", "page with a form", "page in arabic"):
        (script,) = parse(responses[name].text).find_all("script")
        assert script.attrs["src"].startswith("/static/live.js?v=")
        assert script.find_all() == []
        assert script.text == ""


async def test_other_shopper_responses_forbid_sniffing(client, demo):
    for path in (demo.page("D-1001") + ".json", "/b/demo/theme.css", "/static/base.css"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "no-referrer", path


async def test_frame_ancestors_follow_the_brands_allowlist(client, demo):
    allowed = ["https://shop.example.com", "https://www.shop.example.com:8443"]
    changed = await patch_brand(client, demo, frame_ancestors=allowed)
    assert changed.status_code == 200, changed.text
    assert changed.json()["frame_ancestors"] == allowed
    listed = " ".join(allowed)
    check_html_response(await client.get(demo.page("D-1001")), listed)
    check_html_response(await client.get("/demo/track"), listed)
    refused = await client.post(
        demo.page("D-1005") + "/choices/1",
        content="decision=keep",
        headers={"Content-Type": FORM, **SAME_ORIGIN},
    )
    assert refused.status_code == 403
    check_html_response(refused, listed)
    # Not the brand's page: nobody may frame it.
    check_html_response(await client.get("/t/" + "Q" * 32))
    for bad in (["http://shop.example.com"], ["*"], ["https://shop.example.com 'unsafe-inline'"]):
        rejected = await patch_brand(client, demo, frame_ancestors=bad)
        assert rejected.status_code == 422, bad
    check_html_response(await client.get(demo.page("D-1001")), listed)
    cleared = await patch_brand(client, demo, frame_ancestors=[])
    assert cleared.status_code == 200
    check_html_response(await client.get(demo.page("D-1001")))


async def test_text_from_the_brand_and_carriers_is_shown_as_text(client, demo):
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    order = {
        "number": "X-1",
        "placed_at": "2026-11-01T10:00:00Z",
        "currency": "USD",
        "customer": {"id": "X-C1", "locale": "en"},
        "shipping": {"region": "US-CA", "city": hostile, "postal_code": "<b>1</b>"},
        "lines": [
            {
                "ref": "1",
                "sku": "MUG-BLUE",
                "title": f"Mug {hostile}",
                "quantity": 1,
                "unit_price": 1800,
            },
            {
                "ref": "2",
                "sku": "LAMP-OAK",
                "title": f"Lamp {hostile}",
                "quantity": 1,
                "unit_price": 12900,
                "status": "backordered",
            },
        ],
        "shipments": [
            {
                "ref": "P1",
                "carrier": "ups<i>",
                "tracking_number": "1Z<svg onload=x>",
                "status": "in_transit",
                "lines": [{"line": "1", "quantity": 1}],
            },
        ],
    }
    created = await client.post("/api/v1/orders", json=order, headers=demo.headers)
    assert created.status_code == 201, created.text
    scan = await client.post(
        "/api/v1/orders/X-1/shipments/P1/checkpoints",
        json={
            "occurred_at": "2026-11-02T10:00:00Z",
            "status": "in_transit",
            "description": hostile,
            "city": hostile,
        },
        headers=demo.headers,
    )
    assert scan.status_code == 201, scan.text
    renamed = await patch_brand(client, demo, name=f"</title>{hostile}", theme="harbor")
    assert renamed.status_code == 200, renamed.text
    path = "/t/" + created.json()["tracking_url"].rsplit("/t/", 1)[1]
    for url in (path, path + "?lang=ar", "/demo/track"):
        response = await client.get(url)
        assert response.status_code == 200
        check_html_response(response)
        assert len(parse(response.text).find_all("script")) == (0 if "track" in url else 1)
        assert "<script>alert" not in response.text
        assert "<img src=x" not in response.text
    page = parse((await client.get(path)).text)
    titles = [t.text for t in page.find_all(cls="item__title")]
    assert f"Mug {hostile}" in titles
    assert f"Lamp {hostile}" in titles
    assert page.find("details", cls="timeline").find("span").text == hostile
    assert page.find("title").text.startswith("Order X-1 · </title>")
