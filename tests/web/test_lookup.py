"""Looking an order up: number plus email or postal code, rate limited, never through the URL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from unittest import mock
from urllib.parse import urlencode

import httpx
import pytest

from app.web import security
from app.web.security import Signer
from tests.web.support import (
    FORM,
    SAME_ORIGIN,
    SECRET_KEY,
    TOKEN_CHARS,
    form_csrf,
    parse,
    without_per_response_parts,
)

pytestmark = pytest.mark.anyio
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
NO_MATCH = "We could not find an order with those details. Check them and try again."
TOO_MANY = "Too many attempts. Please wait a few minutes and try again."


@contextlib.asynccontextmanager
async def shopper(app, address="203.0.113.7"):
    """A browser at `address`, holding the lookup form's token."""
    transport = httpx.ASGITransport(app=app, client=(address, 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        form = await http.get("/demo/track")
        csrf = form_csrf(form.text, "/demo/track")

        async def look_up(number, contact, headers=SAME_ORIGIN, token=None):
            body = urlencode({"csrf": token or csrf, "number": number, "contact": contact})
            return await http.post(
                "/demo/track", content=body, headers={"Content-Type": FORM, **headers}
            )

        yield look_up


def notice(response):
    alerts = parse(response.text).find_all("p", role="alert")
    return alerts[0].text if alerts else None


@SQLITE
async def test_the_form_posts_and_asks_for_the_number_and_email_or_postal_code(client, demo):
    response = await client.get("/demo/track")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    page = parse(response.text)
    assert page.by_id("lookup-title").text == "Track your order"
    (form,) = page.find_all("form")
    assert (form.attrs["method"], form.attrs["action"]) == ("post", "/demo/track")
    assert [(i.attrs["name"], i.attrs.get("type")) for i in form.find_all("input")] == [
        ("csrf", "hidden"),
        ("number", None),
        ("contact", None),
    ]
    labels = [label.text for label in form.find_all("label")]
    assert labels == ["Order number", "Email address or postal code"]
    assert form.find("button").text == "Find my order"
    assert notice(response) is None


async def test_the_right_number_with_the_email_or_postal_code_leads_to_the_page(app, demo):
    async with shopper(app) as look_up:
        for number, contact in (
            ("D-1001", "shopper1@example.com"),
            ("D-1001", "  Shopper1@Example.COM "),
            (" D-1002 ", "SHOPPER2@example.com"),
            ("D-1002", "11201"),
            ("D-1003", " 787 01 "),
        ):
            response = await look_up(number, contact)
            assert response.status_code == 303, (number, contact, response.text)
            assert response.headers["location"] == f"/t/{demo.tokens[number.strip()]}"
            assert response.content == b""


@SQLITE
async def test_every_kind_of_miss_gets_the_same_answer(app, demo):
    async with shopper(app) as look_up:
        misses = {
            "wrong email": await look_up("D-1001", "shopper9@example.com"),
            "another order's email": await look_up("D-1002", "shopper1@example.com"),
            "wrong postal code": await look_up("D-1003", "78702"),
            "another order's postal code": await look_up("D-1004", "94607"),
            "unknown number": await look_up("D-9999", "shopper1@example.com"),
            "unknown number and postal code": await look_up("X-1", "94607"),
            "empty contact": await look_up("D-1005", ""),
            "postal code prefix": await look_up("D-1006", "802"),
        }
    first = misses["wrong email"]
    assert first.status_code == 200
    assert notice(first) == NO_MATCH
    for name, response in misses.items():
        assert response.status_code == first.status_code, name
        assert response.headers["content-type"] == first.headers["content-type"], name
        assert without_per_response_parts(response.text) == without_per_response_parts(
            first.text
        ), name
        assert "shopper" not in response.text, name


async def test_five_tries_per_order_number_then_429_even_with_the_right_details(app, demo):
    # The limit is per order number, whichever address the attempts come from.
    for attempt in range(5):
        async with shopper(app, f"198.51.100.{attempt + 1}") as look_up:
            response = await look_up("D-1001", f"guess{attempt}@example.com")
            assert (response.status_code, notice(response)) == (200, NO_MATCH)
    async with shopper(app, "198.51.100.200") as look_up:
        for contact in ("shopper1@example.com", "94607"):
            refused = await look_up("D-1001", contact)
            assert refused.status_code == 429
            assert notice(refused) == TOO_MANY
            assert 0 < int(refused.headers["retry-after"]) <= 601
            assert demo.tokens["D-1001"] not in refused.text
        # Other orders are not held back.
        assert (await look_up("D-1002", "shopper2@example.com")).status_code == 303


async def test_concurrent_tries_for_one_order_number_stop_at_five(app, demo):
    async with shopper(app, "198.51.100.50") as look_up:
        responses = await asyncio.gather(
            *(look_up("D-1004", f"guess{n}@example.com") for n in range(9))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 4


@SQLITE
async def test_twenty_tries_per_client_address_then_429(app, demo):
    async with shopper(app, "192.0.2.10") as look_up:
        for n in range(20):
            response = await look_up(f"N-{n}", "someone@example.com")
            assert response.status_code == 200, n
        refused = await look_up("D-1001", "shopper1@example.com")
        assert refused.status_code == 429
        assert notice(refused) == TOO_MANY
        assert 0 < int(refused.headers["retry-after"]) <= 601
    async with shopper(app, "192.0.2.11") as look_up:
        assert (await look_up("D-1001", "shopper1@example.com")).status_code == 303


@SQLITE
async def test_lookups_never_travel_in_the_url(app, client, demo):
    query = urlencode({"number": "D-1001", "contact": "shopper1@example.com"})
    response = await client.get(f"/demo/track?{query}")
    assert response.status_code == 200
    assert demo.tokens["D-1001"] not in response.text
    assert "shopper1" not in response.text
    assert "D-1001" not in response.text
    assert notice(response) is None
    page = parse(response.text)
    assert page.find("input", name="number").attrs.get("value") in (None, "")
    async with shopper(app) as look_up:
        found = await look_up("D-1001", "shopper1@example.com")
        location = found.headers["location"]
        assert location.startswith("/t/")
        assert TOKEN_CHARS.match(location.removeprefix("/t/"))
        assert "D-1001" not in location
        assert "shopper1" not in location


@SQLITE
async def test_a_lookup_without_a_valid_form_token_or_from_another_site_is_refused(app, demo):
    purpose = "lookup:demo"
    with mock.patch.object(security, "time") as clock:
        clock.time.return_value = dt.datetime.now(dt.UTC).timestamp() - 7200 - 60
        expired = Signer(SECRET_KEY).token(purpose)
    async with shopper(app) as look_up:
        for name, kwargs in {
            "foreign origin": {"headers": {"Origin": "https://evil.example"}},
            "expired": {"token": expired},
            "other brand": {"token": Signer(SECRET_KEY).token("lookup:other")},
            "other secret": {"token": Signer("another-secret").token(purpose)},
            "garbage": {"token": "1234.abcd"},
        }.items():
            response = await look_up("D-1001", "shopper1@example.com", **kwargs)
            assert response.status_code == 403, name
            assert notice(response) == "This form has expired. Please try again.", name
        # Refused posts spent no attempts: the right details still work.
        assert (await look_up("D-1001", "shopper1@example.com")).status_code == 303
