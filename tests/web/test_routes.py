"""Routes and errors: unknown and malformed links look alike, wrong methods are refused."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.storage.schema import choices, events
from app.web.security import Signer
from tests.web.support import FORM, SAME_ORIGIN, SECRET_KEY, form_csrf, parse

pytestmark = pytest.mark.anyio
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

UNKNOWN = "Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-AB"  # well formed, 32 characters, no such order
MALFORMED = [
    "Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-A",  # 31 characters
    "Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-ABC",  # 33 characters
    "Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-A!",  # a character outside the alphabet
    "Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-A~",
    "Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-A%C3%A9",  # é
    "Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-A%20",
    "x",
]


def _shape(response):
    return response.status_code, response.headers["content-type"], response.content


@SQLITE
async def test_unknown_and_malformed_tokens_get_byte_identical_404_pages(client, demo):
    unknown = await client.get(f"/t/{UNKNOWN}")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "text/html; charset=utf-8"
    page = parse(unknown.text)
    assert page.find("h1").text == "Tracking link not found"
    assert page.find("p").text == "Check the link in your message, or look your order up."
    for token in MALFORMED:
        response = await client.get(f"/t/{token}")
        assert _shape(response) == _shape(unknown), token
    # A real token with one character changed is just as unknown.
    real = demo.tokens["D-1001"]
    altered = real[:-1] + ("A" if real[-1] != "A" else "B")
    assert _shape(await client.get(f"/t/{altered}")) == _shape(unknown)


@SQLITE
async def test_unknown_and_malformed_tokens_get_identical_problems_for_json_and_events(client):
    for suffix in (".json", "/events"):
        unknown = await client.get(f"/t/{UNKNOWN}{suffix}")
        assert unknown.status_code == 404, suffix
        assert unknown.headers["content-type"] == "application/problem+json"
        body = unknown.json()
        assert body["type"] == "/problems/not-found"
        assert body["status"] == 404
        for token in MALFORMED:
            assert _shape(await client.get(f"/t/{token}{suffix}")) == _shape(unknown), (
                token,
                suffix,
            )


@SQLITE
async def test_an_unknown_brand_has_no_lookup_page(client):
    for response in (
        await client.get("/nope/track"),
        await client.post(
            "/nope/track",
            content="number=D-1001&contact=shopper1%40example.com&csrf=x",
            headers={"Content-Type": FORM, **SAME_ORIGIN},
        ),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert parse(response.text).find("h1").text == "Page not found"
    assert (await client.get("/nope/track")).content == (await client.get("/zzz/track")).content
    css = await client.get("/b/nope/theme.css")
    assert css.status_code == 404


async def test_a_choice_id_that_is_not_this_orders_open_choice_is_refused(client, demo, db):
    async with db.read() as conn:
        (choice_id,) = (await conn.execute(select(choices.c.id))).one()
    d1001, d1005 = demo.page("D-1001"), demo.page("D-1005")
    csrf_1005 = form_csrf((await client.get(d1005)).text)
    # D-1001 shows no choice form: sign the token its form would carry, as the server would.
    csrf_1001 = Signer(SECRET_KEY).token("choice:" + demo.tokens["D-1001"])
    attempts = [
        (f"{d1005}/choices/{choice_id + 1000}", csrf_1005),  # no such choice
        (f"{d1001}/choices/{choice_id}", csrf_1001),  # another order's choice
    ]
    for path, csrf in attempts:
        response = await client.post(
            path,
            content=f"csrf={csrf}&decision=refund",
            headers={"Content-Type": FORM, **SAME_ORIGIN},
        )
        assert response.status_code == 422, path
        assert parse(response.text).find("h1").text == "That choice is not available"
    not_a_number = await client.post(
        f"{d1005}/choices/first",
        content=f"csrf={csrf_1005}&decision=refund",
        headers={"Content-Type": FORM, **SAME_ORIGIN},
    )
    assert not_a_number.status_code == 404
    async with db.read() as conn:
        assert (await conn.execute(select(choices.c.state))).scalar_one() == "open"
        made = await conn.execute(select(events.c.id).where(events.c.type == "choice_made"))
        assert made.all() == []


@SQLITE
async def test_wrong_methods_are_refused_with_405_and_allow(client, demo):
    token = demo.tokens["D-1005"]
    cases = [
        ("POST", f"/t/{token}", {"GET", "HEAD"}),
        ("DELETE", f"/t/{token}", {"GET", "HEAD"}),
        ("PUT", f"/t/{token}.json", {"GET", "HEAD"}),
        ("POST", f"/t/{token}/events", {"GET", "HEAD"}),
        ("GET", f"/t/{token}/choices/1", {"POST"}),
        ("PUT", "/demo/track", {"GET", "HEAD", "POST"}),
        ("POST", "/b/demo/theme.css", {"GET", "HEAD"}),
    ]
    expected, got = {}, {}
    for method, path, allowed in cases:
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/method-not-allowed"
        expected[method, path] = allowed
        got[method, path] = {m.strip() for m in response.headers.get("allow", "").split(",")}
    # RFC 9110: Allow lists every method the resource supports.
    assert got == expected


@SQLITE
async def test_static_files_are_served_and_nothing_else(client):
    css = await client.get("/static/base.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    js = await client.get("/static/live.js")
    assert js.headers["content-type"].startswith("text/javascript")
    for name in ("secret.txt", "..%2Fpyproject.toml", "base.css.map"):
        assert (await client.get(f"/static/{name}")).status_code == 404, name
