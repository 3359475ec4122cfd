"""The event feed: cursor paging, once and in order, one brand at a time."""

from __future__ import annotations

import asyncpg
import pytest

from tests.api.helpers import (
    API,
    assert_problem,
    brand_events,
    order,
    parcel,
    settled_feed,
)

pytestmark = pytest.mark.anyio


async def _make_history(client, headers, prefix: str) -> None:
    for i in range(3):
        await client.post(f"{API}/orders", json=order(f"{prefix}{i}"), headers=headers)
    await client.post(
        f"{API}/orders/{prefix}0/shipments", json=parcel("P1", ("1", 2)), headers=headers
    )
    await client.put(f"{API}/skus/{prefix}SKU", json={"on_hand": 3}, headers=headers)
    await client.post(
        f"{API}/skus/{prefix}SKU/supply",
        json={"ref": "PO-1", "quantity": 5, "expected_date": "2026-12-01"},
        headers=headers,
    )
    changed = order(f"{prefix}1")
    changed["lines"][0]["quantity"] = 5
    await client.post(f"{API}/orders", json=changed, headers=headers)


async def _read_all(client, headers, limit: int) -> tuple[list[dict], str | None]:
    """Page through the whole feed `limit` events at a time; return them and the last cursor."""
    seen: list[dict] = []
    cursor = None
    for _ in range(1000):
        params = {"limit": str(limit)}
        if cursor:
            params["after"] = cursor
        response = await client.get(f"{API}/events", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= limit
        if not page["data"]:
            if cursor is not None:
                assert page["next_cursor"] == cursor
            return seen, page["next_cursor"]
        seen += page["data"]
        cursor = page["next_cursor"]
    raise AssertionError("the feed never ended")


async def test_cursor_paging_returns_each_event_once_in_order(client, brand, db):
    await _make_history(client, brand.headers, "A")
    stored = await brand_events(db, brand.id)
    assert len(stored) == 7
    whole = await settled_feed(client, brand.headers, db, brand.id)

    paged, last_cursor = await _read_all(client, brand.headers, limit=2)

    assert [(e["id"], e["type"]) for e in paged] == stored
    assert whole["data"] == paged
    assert whole["next_cursor"] == last_cursor
    assert [e["order"] for e in paged] == ["A0", "A1", "A2", "A0", None, None, "A1"]
    empty = await client.get(f"{API}/events", params={"after": last_cursor}, headers=brand.headers)
    assert empty.status_code == 200
    assert empty.json() == {"data": [], "next_cursor": last_cursor}

    # Events written later appear after the cursor already held, and only they.
    await client.put(f"{API}/skus/ASKU", json={"on_hand": 9}, headers=brand.headers)
    more = await settled_feed(client, brand.headers, db, brand.id, after=last_cursor)
    assert [(e["type"], e["data"]) for e in more["data"]] == [
        ("stock_set", {"sku": "ASKU", "on_hand": 9})
    ]


async def test_the_first_page_starts_at_the_beginning(client, brand, db):
    empty = await client.get(f"{API}/events", headers=brand.headers)
    assert empty.status_code == 200
    assert empty.json()["data"] == []
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)

    page = await settled_feed(client, brand.headers, db, brand.id)

    assert [(e["type"], e["order"]) for e in page["data"]] == [("order_created", "1001")]
    assert page["data"][0]["data"] == {"lines": 2, "backordered_lines": 1, "shipments": 0}
    # The cursor of the empty first page also reads from the beginning.
    again = await settled_feed(
        client, brand.headers, db, brand.id, after=empty.json()["next_cursor"]
    )
    assert again["data"] == page["data"]


async def test_events_of_another_brand_never_appear(client, brand, other_brand, db):
    await _make_history(client, brand.headers, "A")
    await _make_history(client, other_brand.headers, "G")
    # The same order number at both brands stays separate too.
    await client.post(f"{API}/orders", json=order("SHARED"), headers=brand.headers)
    await client.post(f"{API}/orders", json=order("SHARED"), headers=other_brand.headers)
    await settled_feed(client, brand.headers, db, brand.id)
    await settled_feed(client, other_brand.headers, db, other_brand.id)

    mine, _ = await _read_all(client, brand.headers, limit=3)
    theirs, their_cursor = await _read_all(client, other_brand.headers, limit=3)

    assert [(e["id"], e["type"]) for e in mine] == await brand_events(db, brand.id)
    assert [(e["id"], e["type"]) for e in theirs] == await brand_events(db, other_brand.id)
    assert not {e["id"] for e in mine} & {e["id"] for e in theirs}
    assert all(not (e["order"] or "").startswith("G") for e in mine)
    assert all(not (e["order"] or "").startswith("A") for e in theirs)
    assert all("GSKU" not in str(e["data"]) for e in mine)
    # Another brand's cursor (positioned past all of acme's events) shows acme nothing new.
    after = await client.get(f"{API}/events", params={"after": their_cursor}, headers=brand.headers)
    assert all(e["id"] in {m["id"] for m in mine} for e in after.json()["data"])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_unrelated_transaction_elsewhere_on_the_server_does_not_hold_back_events(
    client, brand, db, request
):
    """An open write in another database of the same PostgreSQL server must not stall the feed."""
    server = request.getfixturevalue("postgres")
    other = await asyncpg.connect(server.admin_url)
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.fetchval("SELECT pg_current_xact_id()")  # now it holds a transaction id
        created = await client.post(f"{API}/orders", json=order(), headers=brand.headers)
        assert created.status_code == 201

        page = (await client.get(f"{API}/events", headers=brand.headers)).json()

        await transaction.rollback()
    finally:
        await other.close()
    assert [e["type"] for e in page["data"]] == ["order_created"]


@pytest.mark.parametrize(
    "params",
    [
        {"after": "not-a-cursor"},
        {"after": "!!!"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"limit": "-1"},
    ],
    ids=[
        "garbage-cursor",
        "non-base64-cursor",
        "limit-zero",
        "limit-over-max",
        "limit-word",
        "limit-negative",
    ],
)
async def test_bad_feed_parameters_are_400(client, brand, params):
    response = await client.get(f"{API}/events", params=params, headers=brand.headers)
    assert_problem(response, 400, "invalid-parameter")
