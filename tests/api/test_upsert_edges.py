"""Upsert edges a brand's integration hits: customer changes, shared customers, odd identifiers."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.api.helpers import API, assert_problem, brand_events, line, order, parcel, small_order

pytestmark = pytest.mark.anyio


async def test_changing_only_the_customer_is_an_update(client, brand, db):
    created = await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    assert created.json()["customer"]["sms_consent"] is True
    before = await brand_events(db, brand.id)
    payload = order()
    payload["customer"]["sms_consent"] = False  # the shopper opted out at the brand
    payload["customer"]["name"] = "Ada Lovelace"

    response = await client.post(f"{API}/orders", json=payload, headers=brand.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer"]["sms_consent"] is False
    assert body["customer"]["name"] == "Ada Lovelace"
    # The order reads differently now, so it is a new version with one order_updated event.
    assert body["version"] == 2
    assert [kind for _, kind in (await brand_events(db, brand.id))[len(before) :]] == [
        "order_updated"
    ]
    batch = await client.post(
        f"{API}/orders/batch", json={"orders": [order()]}, headers=brand.headers
    )
    assert batch.json()["results"][0]["result"] == "updated"


async def test_another_customer_sharing_an_email_leaves_the_first_order_alone(client, brand):
    first = small_order("H1", customer={"id": "C1", "email": "family@example.com"})
    second = small_order("H2", customer={"id": "C2", "email": "family@example.com"})
    created = await client.post(f"{API}/orders", json=first, headers=brand.headers)
    assert created.json()["customer"]["id"] == "C1"

    response = await client.post(f"{API}/orders", json=second, headers=brand.headers)

    assert response.status_code == 201, response.text
    assert response.json()["customer"]["id"] == "C2"
    again = (await client.get(f"{API}/orders/H1", headers=brand.headers)).json()
    assert again["customer"]["id"] == "C1"
    assert again == created.json()


@pytest.mark.parametrize("customer_id", ["", "   "], ids=["empty", "blank"])
async def test_an_empty_customer_id_never_makes_a_409(client, brand, customer_id):
    for number, email in (("E1", "a@example.com"), ("E2", "b@example.com")):
        payload = small_order(number, customer={"id": customer_id, "email": email})
        response = await client.post(f"{API}/orders", json=payload, headers=brand.headers)
        # Either refuse the empty id, or treat it as no id: "retry" (409) can never succeed.
        assert response.status_code in (201, 422), response.text
        if response.status_code == 422:
            assert_problem(response, 422, "invalid-fields", ["customer.id"])


@pytest.mark.parametrize(
    "number", ["A/1", "A#1", "A:1", "A.1", "A-1_x"], ids=["slash", "hash", "colon", "dot", "dash"]
)
async def test_every_accepted_order_number_can_be_read_and_shipped(client, brand, number):
    created = await client.post(f"{API}/orders", json=order(number), headers=brand.headers)
    assert created.status_code in (201, 422), created.text
    if created.status_code == 422:
        assert_problem(created, 422, "invalid-fields", ["number"])
        return
    path = f"{API}/orders/{quote(number, safe='')}"
    got = await client.get(path, headers=brand.headers)
    assert got.status_code == 200, got.text
    assert got.json()["number"] == number
    shipped = await client.post(
        f"{path}/shipments", json=parcel("P1", ("1", 1)), headers=brand.headers
    )
    assert shipped.status_code == 201, shipped.text


async def test_every_accepted_parcel_ref_can_be_patched(client, brand):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    created = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("UPS/1", ("1", 1)), headers=brand.headers
    )
    assert created.status_code in (201, 422), created.text
    if created.status_code == 422:
        assert_problem(created, 422, "invalid-fields", ["ref"])
        return
    patched = await client.patch(
        f"{API}/orders/1001/shipments/UPS%2F1", json={"status": "delivered"}, headers=brand.headers
    )
    assert patched.status_code == 200, patched.text


async def test_every_sku_an_order_line_accepts_can_have_stock(client, brand):
    payload = order(lines=[line("1", "MUG/BLUE", 1)])
    created = await client.post(f"{API}/orders", json=payload, headers=brand.headers)
    assert created.status_code in (201, 422), created.text
    if created.status_code == 422:
        assert_problem(created, 422, "invalid-fields", ["lines[0].sku"])
        return
    stock = await client.put(f"{API}/skus/MUG%2FBLUE", json={"on_hand": 2}, headers=brand.headers)
    assert stock.status_code == 201, stock.text
    assert stock.json()["sku"] == "MUG/BLUE"


async def test_whitespace_around_the_number_is_the_same_order(client, brand):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    response = await client.post(f"{API}/orders", json=order(" 1001 "), headers=brand.headers)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1


@pytest.mark.parametrize(
    ("field", "path"),
    [("lines.0.title", "lines[0].title"), ("customer.name", "customer.name"), ("number", "number")],
    ids=["line-title", "customer-name", "number"],
)
async def test_a_nul_character_is_refused_or_kept_the_same_on_every_backend(
    client, brand, field, path
):
    payload = order()
    parent, _, name = field.rpartition(".")
    target = payload
    for part in parent.split(".") if parent else []:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[name] = target.get(name) or "Ada"
    target[name] = "A\u0000" + str(target[name])

    response = await client.post(f"{API}/orders", json=payload, headers=brand.headers)

    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        assert_problem(response, 422, "invalid-fields", [path])


async def test_every_accepted_supply_ref_can_be_deleted(client, brand):
    await client.put(f"{API}/skus/MUG-BLUE", json={"on_hand": 0}, headers=brand.headers)
    created = await client.post(
        f"{API}/skus/MUG-BLUE/supply",
        json={"ref": "PO/2026/7", "quantity": 5, "expected_date": "2026-12-01"},
        headers=brand.headers,
    )
    assert created.status_code in (201, 422), created.text
    if created.status_code == 422:
        assert_problem(created, 422, "invalid-fields", ["ref"])
        return
    deleted = await client.delete(
        f"{API}/skus/MUG-BLUE/supply/PO%2F2026%2F7", headers=brand.headers
    )
    assert deleted.status_code == 204, deleted.text
