"""SKU stock and inbound supply, end to end."""

from __future__ import annotations

import pytest

from app.storage import schema
from tests.api.helpers import API, assert_problem, brand_events, count, settled_feed, snapshot

pytestmark = pytest.mark.anyio

SKU = {
    "title": "Oak lamp",
    "on_hand": 4,
    "production_lead_days": 21,
    "release_date": "2026-12-01",
    "season_start": None,
    "alternatives": [
        {
            "sku": "LAMP-PINE",
            "title": "Pine lamp",
            "image_url": "https://cdn.example.com/pine.jpg",
            "unit_price": 9900,
        }
    ],
}


async def test_put_sku_creates_then_replaces_and_get_reads_it(client, brand, db):
    created = await client.put(f"{API}/skus/LAMP-OAK", json=SKU, headers=brand.headers)
    assert created.status_code == 201, created.text
    assert created.json() == {"sku": "LAMP-OAK", **SKU}
    assert [kind for _, kind in await brand_events(db, brand.id)] == ["stock_set"]

    same = await client.put(f"{API}/skus/LAMP-OAK", json=SKU, headers=brand.headers)
    assert same.status_code == 200, same.text
    assert same.json() == created.json()
    assert [kind for _, kind in await brand_events(db, brand.id)] == ["stock_set"]

    replaced = await client.put(f"{API}/skus/LAMP-OAK", json={"on_hand": 0}, headers=brand.headers)
    assert replaced.status_code == 200, replaced.text
    # PUT replaces: attributes not sent are cleared.
    assert replaced.json() == {
        "sku": "LAMP-OAK",
        "title": None,
        "on_hand": 0,
        "production_lead_days": None,
        "release_date": None,
        "season_start": None,
        "alternatives": [],
    }
    assert [kind for _, kind in await brand_events(db, brand.id)] == ["stock_set", "stock_set"]
    assert await count(db, schema.skus) == 1

    got = await client.get(f"{API}/skus/LAMP-OAK", headers=brand.headers)
    assert got.status_code == 200
    assert got.json() == replaced.json()


async def test_get_unknown_sku_is_404(client, brand):
    response = await client.get(f"{API}/skus/NOPE", headers=brand.headers)
    assert_problem(response, 404, "unknown-sku")


async def test_supply_add_list_delete(client, brand, db):
    await client.put(f"{API}/skus/LAMP-OAK", json={"on_hand": 0}, headers=brand.headers)
    late = {"ref": "PO-2", "quantity": 40, "expected_date": "2026-12-20", "confidence": 0.5}
    soon = {"ref": "PO-1", "kind": "production", "quantity": 10, "expected_date": "2026-11-20"}

    first = await client.post(f"{API}/skus/LAMP-OAK/supply", json=late, headers=brand.headers)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "sku": "LAMP-OAK",
        "ref": "PO-2",
        "kind": "purchase_order",
        "quantity": 40,
        "received_quantity": 0,
        "expected_date": "2026-12-20",
        "confidence": 0.5,
    }
    second = await client.post(f"{API}/skus/LAMP-OAK/supply", json=soon, headers=brand.headers)
    assert second.status_code == 201, second.text

    listed = await client.get(f"{API}/skus/LAMP-OAK/supply", headers=brand.headers)
    assert listed.status_code == 200
    assert listed.json() == {"data": [second.json(), first.json()]}  # soonest first

    gone = await client.delete(f"{API}/skus/LAMP-OAK/supply/PO-2", headers=brand.headers)
    assert gone.status_code == 204
    assert gone.content == b""
    listed = await client.get(f"{API}/skus/LAMP-OAK/supply", headers=brand.headers)
    assert listed.json() == {"data": [second.json()]}
    assert await count(db, schema.inbound_supply) == 1

    before = await snapshot(db)
    again = await client.delete(f"{API}/skus/LAMP-OAK/supply/PO-2", headers=brand.headers)
    assert_problem(again, 404, "not-found")
    assert await snapshot(db) == before

    feed = (await settled_feed(client, brand.headers, db, brand.id))["data"]
    assert [(e["type"], e["order"], e["data"].get("ref")) for e in feed] == [
        ("stock_set", None, None),
        ("supply_added", None, "PO-2"),
        ("supply_added", None, "PO-1"),
        ("supply_removed", None, "PO-2"),
    ]
    assert feed[1]["data"] == {
        "sku": "LAMP-OAK",
        "ref": "PO-2",
        "quantity": 40,
        "expected_date": "2026-12-20",
    }


async def test_supply_of_an_unknown_sku_lists_as_404(client, brand):
    response = await client.get(f"{API}/skus/NOPE/supply", headers=brand.headers)
    assert_problem(response, 404, "unknown-sku")
