"""A brand's own message wording: checked in the sandbox before it is kept, per brand only."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import API, assert_problem
from tests.conftest import BrandKey

pytestmark = pytest.mark.anyio

PART = f"{API}/message-templates/backordered.sms.text"


async def test_a_brand_sets_reads_lists_and_removes_its_wording(
    client: httpx.AsyncClient, brand: BrandKey, other_brand: BrandKey
) -> None:
    source = "{{ brand.name }}: order {{ order.number }} waits for stock. {{ order.tracking_url }}"
    put = await client.put(PART, json={"source": source}, headers=brand.headers)
    assert put.status_code == 200, put.text
    assert put.json() == {"name": "backordered.sms.text", "source": source}
    assert (await client.get(PART, headers=brand.headers)).json()["source"] == source
    listed = (await client.get(f"{API}/message-templates", headers=brand.headers)).json()
    assert [t["name"] for t in listed["templates"]] == ["backordered.sms.text"]
    assert "eta_changed.email.html" in listed["available"]
    # Another brand sees none of it.
    assert_problem(await client.get(PART, headers=other_brand.headers), 404, "not-found")
    assert (await client.delete(PART, headers=brand.headers)).status_code == 204
    assert_problem(await client.delete(PART, headers=brand.headers), 404, "not-found")


async def test_an_override_may_extend_the_shipped_part(
    client: httpx.AsyncClient, brand: BrandKey
) -> None:
    source = '{% extends "default:eta_changed.email.html" %}'
    response = await client.put(
        f"{API}/message-templates/eta_changed.email.html",
        json={"source": source},
        headers=brand.headers,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{{ order.number ", "line 1"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
        ("{{ brand.name.__class__ }}", "unsafe"),
    ],
)
async def test_broken_or_unsafe_wording_is_refused_with_the_reason(
    client: httpx.AsyncClient, brand: BrandKey, source: str, says: str
) -> None:
    response = await client.put(PART, json={"source": source}, headers=brand.headers)
    body = assert_problem(response, 422, "invalid-fields")
    (error,) = body["errors"]
    assert error["path"] == "source"
    assert says in error["message"].lower() or "not safely" in error["message"].lower()


async def test_unknown_and_malformed_part_names(client: httpx.AsyncClient, brand: BrandKey) -> None:
    unknown = await client.put(
        f"{API}/message-templates/nothing.sms.text", json={"source": "x"}, headers=brand.headers
    )
    assert (
        "unknown template" in assert_problem(unknown, 422, "invalid-fields")["errors"][0]["message"]
    )
    malformed = await client.put(
        f"{API}/message-templates/..%2Fetc", json={"source": "x"}, headers=brand.headers
    )
    assert malformed.status_code in (400, 404)
