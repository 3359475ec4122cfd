"""Every error status the merchant API answers, with its problem+json body."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.api.keys import revoke_key
from app.main import create_app
from app.storage import schema
from tests.api.helpers import (
    API,
    assert_problem,
    count,
    order,
    order_version,
    parcel,
    small_order,
    snapshot,
)

pytestmark = pytest.mark.anyio

LIMIT = 1000


# 401 ---------------------------------------------------------------------------------------


async def test_401_is_identical_for_every_kind_of_bad_key(client, brand, db):
    well_formed_unknown = "wa_0123456789ab_" + "x" * 43
    attempts = {
        "missing header": {},
        "wrong scheme": {"Authorization": f"Basic {brand.key}"},
        "scheme only": {"Authorization": "Bearer "},
        "malformed key": {"Authorization": "Bearer not-a-key"},
        "unknown key": {"Authorization": f"Bearer {well_formed_unknown}"},
        "right prefix, wrong secret": {"Authorization": f"Bearer {brand.key[:-4]}AAAA"},
    }
    answers = {}
    for name, headers in attempts.items():
        answers[name] = await client.get(f"{API}/orders/1001", headers=headers)
    async with db.write() as conn:
        assert await revoke_key(conn, brand.prefix, dt.datetime.now(dt.UTC))
    answers["revoked key"] = await client.get(f"{API}/orders/1001", headers=brand.headers)

    reference = answers["missing header"]
    body = assert_problem(reference, 401, "unauthorized")
    assert "errors" not in body
    assert reference.headers["www-authenticate"] == 'Bearer realm="whereabouts"'
    for name, response in answers.items():
        assert response.status_code == 401, name
        assert response.content == reference.content, name
        assert response.headers["content-type"] == reference.headers["content-type"], name
        assert response.headers["www-authenticate"] == reference.headers["www-authenticate"], name
        assert response.headers.get("content-length") == reference.headers.get("content-length")


async def test_401_on_writes_changes_nothing(client, brand, db):
    before = await snapshot(db)
    bad = {"Authorization": "Bearer wa_0123456789ab_" + "x" * 43}
    responses = [
        await client.post(f"{API}/orders", json=order(), headers=bad),
        await client.post(f"{API}/orders/batch", json={"orders": [order()]}, headers=bad),
        await client.put(f"{API}/skus/X", json={"on_hand": 1}, headers=bad),
        await client.post(f"{API}/orders", json=order()),
        await client.get(f"{API}/events"),
        await client.delete(f"{API}/skus/X/supply/PO-1"),
    ]
    for response in responses:
        assert_problem(response, 401, "unauthorized")
    assert await snapshot(db) == before


async def test_revoked_key_cannot_write(client, brand, db):
    async with db.write() as conn:
        await revoke_key(conn, brand.prefix, dt.datetime.now(dt.UTC))
    response = await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    assert_problem(response, 401, "unauthorized")
    assert await count(db, schema.orders) == 0


# 404 ---------------------------------------------------------------------------------------


async def _acme_world(client, brand) -> None:
    assert (
        await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    ).status_code == 201
    assert (
        await client.post(
            f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 1)), headers=brand.headers
        )
    ).status_code == 201
    assert (
        await client.put(f"{API}/skus/MUG-BLUE", json={"on_hand": 3}, headers=brand.headers)
    ).status_code == 201
    assert (
        await client.post(
            f"{API}/skus/MUG-BLUE/supply",
            json={"ref": "PO-1", "quantity": 5, "expected_date": "2026-12-01"},
            headers=brand.headers,
        )
    ).status_code == 201


async def test_another_brands_order_looks_like_no_order(client, brand, other_brand, db):
    never = await client.get(f"{API}/orders/1001", headers=other_brand.headers)
    await _acme_world(client, brand)
    acme_view = (await client.get(f"{API}/orders/1001", headers=brand.headers)).json()
    before = await snapshot(db)

    got = await client.get(f"{API}/orders/1001", headers=other_brand.headers)
    assert_problem(got, 404, "not-found")
    assert got.content == never.content

    attempts = [
        await client.post(
            f"{API}/orders/1001/shipments", json=parcel("P9", ("1", 1)), headers=other_brand.headers
        ),
        await client.patch(
            f"{API}/orders/1001/shipments/P1", json={"status": "lost"}, headers=other_brand.headers
        ),
        await client.post(
            f"{API}/orders/1001/shipments/P1/checkpoints",
            json={"occurred_at": "2026-11-02T10:00:00Z", "status": "lost", "description": "gone"},
            headers=other_brand.headers,
        ),
    ]
    for response in attempts:
        assert_problem(response, 404, "not-found")
    assert await snapshot(db) == before
    assert (await client.get(f"{API}/orders/1001", headers=brand.headers)).json() == acme_view


async def test_same_order_number_at_another_brand_is_a_separate_order(
    client, brand, other_brand, db
):
    await _acme_world(client, brand)
    acme_view = (await client.get(f"{API}/orders/1001", headers=brand.headers)).json()
    theirs = order()
    theirs["lines"][0]["quantity"] = 9

    response = await client.post(f"{API}/orders", json=theirs, headers=other_brand.headers)

    assert response.status_code == 201, response.text
    assert response.json()["version"] == 1
    assert response.json()["shipments"] == []
    assert (await client.get(f"{API}/orders/1001", headers=brand.headers)).json() == acme_view
    assert await order_version(db, brand.id, "1001") == 2


async def test_another_brands_sku_and_supply_look_like_none(client, brand, other_brand, db):
    await _acme_world(client, brand)
    sku_view = (await client.get(f"{API}/skus/MUG-BLUE", headers=brand.headers)).json()
    supply_view = (await client.get(f"{API}/skus/MUG-BLUE/supply", headers=brand.headers)).json()
    before = await snapshot(db)

    assert_problem(
        await client.get(f"{API}/skus/MUG-BLUE", headers=other_brand.headers), 404, "unknown-sku"
    )
    assert_problem(
        await client.get(f"{API}/skus/MUG-BLUE/supply", headers=other_brand.headers),
        404,
        "unknown-sku",
    )
    assert_problem(
        await client.post(
            f"{API}/skus/MUG-BLUE/supply",
            json={"ref": "PO-9", "quantity": 5, "expected_date": "2026-12-01"},
            headers=other_brand.headers,
        ),
        404,
        "unknown-sku",
    )
    assert_problem(
        await client.delete(f"{API}/skus/MUG-BLUE/supply/PO-1", headers=other_brand.headers),
        404,
        "unknown-sku",
    )
    assert await snapshot(db) == before

    # PUT names the caller's own SKU: it creates theirs and leaves acme's alone.
    put = await client.put(
        f"{API}/skus/MUG-BLUE", json={"on_hand": 99}, headers=other_brand.headers
    )
    assert put.status_code == 201, put.text
    assert (await client.get(f"{API}/skus/MUG-BLUE", headers=brand.headers)).json() == sku_view
    assert (
        await client.get(f"{API}/skus/MUG-BLUE/supply", headers=brand.headers)
    ).json() == supply_view
    assert (
        await client.get(f"{API}/skus/MUG-BLUE/supply", headers=other_brand.headers)
    ).json() == {"data": []}


async def test_unknown_order_shipment_and_supply_are_404(client, brand, db):
    await _acme_world(client, brand)
    before = await snapshot(db)
    responses = [
        await client.get(f"{API}/orders/NOPE", headers=brand.headers),
        await client.post(f"{API}/orders/NOPE/shipments", json=parcel("P1"), headers=brand.headers),
        await client.patch(
            f"{API}/orders/1001/shipments/NOPE", json={"status": "lost"}, headers=brand.headers
        ),
        await client.post(
            f"{API}/orders/1001/shipments/NOPE/checkpoints",
            json={"occurred_at": "2026-11-02T10:00:00Z", "status": "lost", "description": "gone"},
            headers=brand.headers,
        ),
        await client.delete(f"{API}/skus/MUG-BLUE/supply/NOPE", headers=brand.headers),
    ]
    for response in responses:
        assert_problem(response, 404, "not-found")
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    "path",
    ["/api/v1/nope", "/api/v2/orders", "/api/v1/orders/1001/parcels", "/api/v1/", "/api"],
)
async def test_unknown_api_paths_are_404_problems(client, brand, path):
    for headers in ({}, brand.headers):
        response = await client.get(path, headers=headers)
        assert_problem(response, 404, "not-found")


# 405 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/orders/1001", {"GET"}),
        ("PUT", "/api/v1/orders", {"POST"}),
        ("GET", "/api/v1/orders/1001/shipments", {"POST"}),
        ("PUT", "/api/v1/orders/1001/shipments/P1", {"PATCH"}),
        ("POST", "/api/v1/events", {"GET"}),
        ("DELETE", "/api/v1/skus/MUG-BLUE", {"GET", "PUT"}),
        ("PATCH", "/api/v1/skus/MUG-BLUE/supply", {"GET", "POST"}),
    ],
    ids=[
        "delete-order",
        "put-orders",
        "get-shipments",
        "put-shipment",
        "post-events",
        "delete-sku",
        "patch-supply",
    ],
)
async def test_405_is_a_problem_listing_every_allowed_method(client, brand, method, path, allowed):
    response = await client.request(method, path, headers=brand.headers)
    assert_problem(response, 405, "method-not-allowed")
    listed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed <= listed, response.headers["allow"]
    assert method not in listed


# 409 ---------------------------------------------------------------------------------------


async def test_duplicate_shipment_ref_is_409(client, brand, db):
    await client.post(
        f"{API}/orders",
        json=order(lines=[order()["lines"][0] | {"quantity": 5}]),
        headers=brand.headers,
    )
    await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 1)), headers=brand.headers
    )
    before = await snapshot(db)

    response = await client.post(
        f"{API}/orders/1001/shipments",
        json=parcel("P1", ("1", 1), carrier="fedex"),
        headers=brand.headers,
    )

    assert_problem(response, 409, "conflict")
    assert await snapshot(db) == before


async def test_duplicate_supply_ref_is_409(client, brand, db):
    await client.put(f"{API}/skus/MUG-BLUE", json={"on_hand": 0}, headers=brand.headers)
    supply = {"ref": "PO-1", "quantity": 5, "expected_date": "2026-12-01"}
    assert (
        await client.post(f"{API}/skus/MUG-BLUE/supply", json=supply, headers=brand.headers)
    ).status_code == 201
    before = await snapshot(db)

    response = await client.post(
        f"{API}/skus/MUG-BLUE/supply", json=supply | {"quantity": 7}, headers=brand.headers
    )

    assert_problem(response, 409, "conflict")
    assert await snapshot(db) == before


# 413 ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def client_for(settings, **changes):
    """Yield a client for an app built with some settings changed (same database as `db`)."""
    app = create_app(dataclasses.replace(settings, **changes))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture
async def small_client(settings):
    """A client for an app whose body limit is LIMIT bytes."""
    async with client_for(settings, api_max_body_bytes=LIMIT) as http:
        yield http


def _padded(payload: dict, size: int) -> bytes:
    raw = json.dumps(payload).encode()
    assert len(raw) <= size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


async def _chunks(raw: bytes, size: int = 100):
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


JSON = {"Content-Type": "application/json"}


async def test_413_with_content_length(small_client, brand, db):
    raw = _padded(order(), LIMIT + 1)

    response = await small_client.post(f"{API}/orders", content=raw, headers=brand.headers | JSON)

    body = assert_problem(response, 413, "payload-too-large")
    assert str(LIMIT) in body["detail"]
    assert await count(db, schema.orders) == 0


async def test_413_with_a_chunked_body(small_client, brand, db):
    raw = _padded(order(), 3 * LIMIT)

    response = await small_client.post(
        f"{API}/orders", content=_chunks(raw), headers=brand.headers | JSON
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload-too-large")
    assert await count(db, schema.orders) == 0


async def test_body_at_the_limit_is_accepted_chunked_or_not(small_client, brand, db):
    sku = {"title": "Blue mug", "on_hand": 2}
    raw = _padded(sku, LIMIT)
    plain = await small_client.put(f"{API}/skus/A", content=raw, headers=brand.headers | JSON)
    assert plain.status_code == 201, plain.text
    chunked = await small_client.put(
        f"{API}/skus/B", content=_chunks(raw), headers=brand.headers | JSON
    )
    assert chunked.status_code == 201, chunked.text
    assert await count(db, schema.skus) == 2


async def test_413_for_a_batch_over_the_default_limit(client, settings, brand, db):
    raw = _padded({"orders": [small_order("1")]}, settings.api_max_body_bytes + 1)
    response = await client.post(f"{API}/orders/batch", content=raw, headers=brand.headers | JSON)
    assert_problem(response, 413, "payload-too-large")
    assert await count(db, schema.orders) == 0


# 415 and 400 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
    ids=["none", "text-plain", "form", "multipart", "jsonx"],
)
async def test_415_unless_the_body_is_json(client, brand, db, content_type):
    headers = dict(brand.headers)
    if content_type:
        headers["Content-Type"] = content_type
    raw = json.dumps(order()).encode()
    before = await snapshot(db)

    responses = [
        await client.post(f"{API}/orders", content=raw, headers=headers),
        await client.put(f"{API}/skus/X", content=b'{"on_hand": 1}', headers=headers),
    ]

    for response in responses:
        assert_problem(response, 415, "unsupported-media-type")
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/merge-patch+json"],
    ids=["charset", "upper-case", "plus-json"],
)
async def test_json_media_types_are_accepted(client, brand, content_type):
    response = await client.put(
        f"{API}/skus/X",
        content=b'{"on_hand": 1}',
        headers=brand.headers | {"Content-Type": content_type},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"number": "1001",}', b"{'number': '1001'}", b"\xff\xfe", b"null null"],
    ids=["empty", "unclosed", "trailing-comma", "single-quotes", "not-utf8", "two-values"],
)
async def test_400_for_malformed_json(client, brand, db, raw):
    response = await client.post(f"{API}/orders", content=raw, headers=brand.headers | JSON)
    body = assert_problem(response, 400, "invalid-json")
    assert "errors" not in body
    assert await count(db, schema.orders) == 0


# 422 ---------------------------------------------------------------------------------------


async def test_422_lists_the_path_of_each_invalid_field_in_a_batch(client, brand, db):
    orders = [small_order(str(i)) for i in range(5)]
    orders[3]["customer"] = {"phone": "4155550123"}
    orders[1]["lines"][0]["quantity"] = 0
    orders[4]["placed_at"] = "2026-11-01T10:00:00"

    response = await client.post(
        f"{API}/orders/batch", json={"orders": orders}, headers=brand.headers
    )

    body = assert_problem(
        response,
        422,
        "invalid-fields",
        ["orders[1].lines[0].quantity", "orders[3].customer.phone", "orders[4].placed_at"],
    )
    assert body["detail"] == "3 invalid field(s)"
    assert await count(db, schema.orders) == 0
