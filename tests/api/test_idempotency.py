"""Idempotency-Key on POST: replays, reuse with another request, failures, brands."""

from __future__ import annotations

import pytest

from app.storage import schema
from tests.api.helpers import API, assert_problem, brand_events, count, order, parcel, snapshot

pytestmark = pytest.mark.anyio


def keyed(brand, key: str) -> dict[str, str]:
    return brand.headers | {"Idempotency-Key": key}


async def test_same_key_and_body_replays_the_first_response_byte_for_byte(client, brand, db):
    first = await client.post(f"{API}/orders", json=order(), headers=keyed(brand, "k-1"))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    before = await snapshot(db)

    again = await client.post(f"{API}/orders", json=order(), headers=keyed(brand, "k-1"))

    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await snapshot(db) == before


async def test_a_replayed_shipment_is_not_a_duplicate(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    first = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 1)), headers=keyed(brand, "ship-1")
    )
    assert first.status_code == 201, first.text

    again = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 1)), headers=keyed(brand, "ship-1")
    )

    assert again.status_code == 201, again.text
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert await count(db, schema.shipments) == 1
    assert [kind for _, kind in await brand_events(db, brand.id)] == [
        "order_created",
        "shipment_created",
    ]
    # Without the key the same request is the duplicate it is.
    duplicate = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 1)), headers=brand.headers
    )
    assert_problem(duplicate, 409, "conflict")


async def test_the_replay_is_the_first_response_even_after_later_changes(client, brand):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    first = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 2)), headers=keyed(brand, "ship-1")
    )
    await client.patch(
        f"{API}/orders/1001/shipments/P1", json={"status": "delivered"}, headers=brand.headers
    )

    again = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 2)), headers=keyed(brand, "ship-1")
    )

    assert again.content == first.content
    assert again.json()["version"] == 2


async def test_batch_replay(client, brand, db):
    batch = {"orders": [order("A"), order("B")]}
    first = await client.post(f"{API}/orders/batch", json=batch, headers=keyed(brand, "batch-1"))
    assert first.status_code == 200
    before = await snapshot(db)
    again = await client.post(f"{API}/orders/batch", json=batch, headers=keyed(brand, "batch-1"))
    assert (again.status_code, again.content) == (200, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    "second",
    [
        ("/orders", {"changed": "quantity"}),
        ("/orders", {"changed": "key order"}),
        ("/orders/batch", {"changed": "path"}),
    ],
    ids=["other-body", "same-json-other-bytes", "other-path"],
)
async def test_same_key_with_another_request_is_422(client, brand, db, second):
    first = await client.post(f"{API}/orders", json=order(), headers=keyed(brand, "k-1"))
    assert first.status_code == 201
    before = await snapshot(db)
    path, how = second
    if how["changed"] == "quantity":
        payload = order()
        payload["lines"][0]["quantity"] = 5
    elif how["changed"] == "key order":
        payload = dict(reversed(list(order().items())))
    else:
        payload = {"orders": [order()]}

    response = await client.post(f"{API}{path}", json=payload, headers=keyed(brand, "k-1"))

    assert_problem(response, 422, "idempotency-key-reused")
    assert "idempotent-replayed" not in response.headers
    assert await snapshot(db) == before


async def test_a_failed_request_keeps_no_key_so_a_corrected_retry_succeeds(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    before = await snapshot(db)

    failed = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 3)), headers=keyed(brand, "ship-1")
    )
    assert_problem(failed, 409, "quantity-exceeded", ["lines[0].line"])
    assert await snapshot(db) == before
    assert await count(db, schema.idempotency_keys) == 0

    retried = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 2)), headers=keyed(brand, "ship-1")
    )
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    replay = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 2)), headers=keyed(brand, "ship-1")
    )
    assert replay.content == retried.content
    assert replay.headers["idempotent-replayed"] == "true"


async def test_an_invalid_request_keeps_no_key(client, brand, db):
    bad = order()
    bad["lines"][0]["quantity"] = 0
    failed = await client.post(f"{API}/orders", json=bad, headers=keyed(brand, "k-1"))
    assert_problem(failed, 422, "invalid-fields", ["lines[0].quantity"])
    assert await count(db, schema.idempotency_keys) == 0
    fixed = await client.post(f"{API}/orders", json=order(), headers=keyed(brand, "k-1"))
    assert fixed.status_code == 201, fixed.text


async def test_keys_are_per_brand(client, brand, other_brand, db):
    mine = await client.post(f"{API}/orders", json=order(), headers=keyed(brand, "shared-key"))
    theirs = await client.post(
        f"{API}/orders", json=order(), headers=keyed(other_brand, "shared-key")
    )
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["tracking_url"] != mine.json()["tracking_url"]
    assert await count(db, schema.orders) == 2

    # A different request under the same key string is fine at the other brand too.
    other = order("G-7")
    again = await client.post(f"{API}/orders", json=other, headers=keyed(other_brand, "other-key"))
    reuse = await client.post(f"{API}/orders", json=other, headers=keyed(brand, "other-key"))
    assert again.status_code == reuse.status_code == 201
    assert await count(db, schema.idempotency_keys) == 4


@pytest.mark.parametrize("key", ["", "k" * 256], ids=["empty", "256-chars"])
async def test_unusable_keys_are_400(client, brand, db, key):
    response = await client.post(f"{API}/orders", json=order(), headers=keyed(brand, key))
    assert_problem(response, 400, "invalid-parameter")
    assert await count(db, schema.orders) == 0
    assert await count(db, schema.idempotency_keys) == 0


async def test_a_255_char_key_works(client, brand):
    first = await client.post(f"{API}/orders", json=order(), headers=keyed(brand, "k" * 255))
    again = await client.post(f"{API}/orders", json=order(), headers=keyed(brand, "k" * 255))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"


async def test_concurrent_requests_with_one_key_make_one_parcel(client, brand, db):
    import anyio

    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    responses = []

    async def send() -> None:
        responses.append(
            await client.post(
                f"{API}/orders/1001/shipments",
                json=parcel("P1", ("1", 1)),
                headers=keyed(brand, "race"),
            )
        )

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(send)

    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 3
    assert await count(db, schema.shipments) == 1
