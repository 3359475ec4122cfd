"""Orders end to end, as a brand's integration sees them: upserts, batches, parcels, scans."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from app.storage import schema
from tests.api.helpers import (
    API,
    TRACKING_URL,
    assert_problem,
    brand_events,
    count,
    line,
    order,
    order_version,
    parcel,
    settled_feed,
    snapshot,
    utc,
)

pytestmark = pytest.mark.anyio


async def test_upsert_creates_then_identical_upsert_is_unchanged(client, brand, db):
    created = await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"
    first = created.json()
    assert first["version"] == 1
    events_before = await brand_events(db, brand.id)
    assert [kind for _, kind in events_before] == ["order_created"]

    again = await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    assert again.status_code == 200, again.text
    assert again.json() == first
    assert await brand_events(db, brand.id) == events_before
    assert await order_version(db, brand.id, "1001") == 1


async def test_changed_upsert_bumps_version_by_one_and_records_order_updated(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    before = await brand_events(db, brand.id)
    changed = order()
    changed["lines"][0]["quantity"] = 3
    changed["shipping"]["city"] = "Berkeley"

    response = await client.post(f"{API}/orders", json=changed, headers=brand.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2
    assert body["lines"][0]["quantity"] == 3
    assert body["shipping"]["city"] == "Berkeley"
    after = await brand_events(db, brand.id)
    assert after[: len(before)] == before
    assert [kind for _, kind in after[len(before) :]] == ["order_updated"]
    feed = (await settled_feed(client, brand.headers, db, brand.id))["data"]
    assert feed[-1]["type"] == "order_updated"
    assert feed[-1]["order"] == "1001"
    assert "lines.1.quantity" in feed[-1]["data"]["changes"]
    assert "shipping_city" in feed[-1]["data"]["changes"]
    # Sending the changed order again is unchanged at version 2.
    again = await client.post(f"{API}/orders", json=changed, headers=brand.headers)
    assert again.status_code == 200
    assert again.json()["version"] == 2
    assert await brand_events(db, brand.id) == after


async def test_read_order_shows_everything_with_a_public_tracking_link(client, brand, db):
    created = await client.post(f"{API}/orders", json=order(), headers=brand.headers)

    response = await client.get(f"{API}/orders/1001", headers=brand.headers)

    assert response.status_code == 200
    body = response.json()
    assert body == created.json()
    assert body["number"] == "1001"
    assert body["currency"] == "USD"
    assert utc(body["placed_at"]) == dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)
    assert body["customer"] == {
        "id": None,
        "email": "ada@example.com",
        "phone": "+14155550123",
        "name": None,
        "locale": "en-US",
        "timezone": "America/Los_Angeles",
        "sms_consent": True,
        "email_consent": True,
    }
    assert body["shipping"] == {"region": "US-CA", "city": "Oakland", "postal_code": "94607"}
    assert [
        (x["ref"], x["status"], x["backorder_type"], x["shipped_quantity"]) for x in body["lines"]
    ] == [
        ("1", "in_stock", None, 0),
        ("2", "backordered", "standard", 0),
    ]
    assert body["shipments"] == []
    match = TRACKING_URL.match(body["tracking_url"])
    assert match, body["tracking_url"]
    token = match.group(1)
    async with db.read() as conn:
        stored = (
            await conn.execute(schema.orders.select().where(schema.orders.c.brand_id == brand.id))
        ).one()
    assert stored.tracking_token == token
    page = await client.get(f"/t/{token}.json")
    assert page.status_code == 200
    assert page.json()["order"]["number"] == "1001"


async def test_tracking_tokens_differ_between_orders(client, brand):
    urls = set()
    for number in ("A-1", "A-2", "A-3"):
        response = await client.post(f"{API}/orders", json=order(number), headers=brand.headers)
        urls.add(response.json()["tracking_url"])
    assert len(urls) == 3
    assert all(TRACKING_URL.match(url) for url in urls)


async def test_every_new_order_gets_its_own_short_sms_code(client, brand, db):
    for number in ("A-1", "A-2"):
        await client.post(f"{API}/orders", json=order(number), headers=brand.headers)
    batch = {"orders": [order("B-1"), order("B-2"), order("B-3")]}
    await client.post(f"{API}/orders/batch", json=batch, headers=brand.headers)
    async with db.read() as conn:
        codes = (
            (
                await conn.execute(
                    select(schema.orders.c.sms_code).where(schema.orders.c.brand_id == brand.id)
                )
            )
            .scalars()
            .all()
        )
    assert len(codes) == len(set(codes)) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9]{12}", code) for code in codes), codes


async def test_batch_reports_created_updated_unchanged_in_request_order(client, brand, db):
    await client.post(f"{API}/orders", json=order("A"), headers=brand.headers)
    await client.post(f"{API}/orders", json=order("B"), headers=brand.headers)
    before = await brand_events(db, brand.id)
    changed_a = order("A")
    changed_a["lines"][1]["quantity"] = 4

    response = await client.post(
        f"{API}/orders/batch",
        json={"orders": [order("C"), changed_a, order("B"), order("D")]},
        headers=brand.headers,
    )

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["number"], r["result"], r["version"]) for r in results] == [
        ("C", "created", 1),
        ("A", "updated", 2),
        ("B", "unchanged", 1),
        ("D", "created", 1),
    ]
    for result in results:
        assert TRACKING_URL.match(result["tracking_url"])
        read = (await client.get(f"{API}/orders/{result['number']}", headers=brand.headers)).json()
        assert read["tracking_url"] == result["tracking_url"]
        assert read["version"] == result["version"]
    new = [kind for _, kind in (await brand_events(db, brand.id))[len(before) :]]
    assert sorted(new) == ["order_created", "order_created", "order_updated"]


async def test_split_shipment_with_partial_quantities(client, brand, db):
    payload = order(lines=[line("1", "MUG-BLUE", 3), line("2", "LAMP-OAK", 1)])
    await client.post(f"{API}/orders", json=payload, headers=brand.headers)

    first = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 1)), headers=brand.headers
    )
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["version"] == 2
    assert (body["lines"][0]["status"], body["lines"][0]["shipped_quantity"]) == ("in_stock", 1)

    second = await client.post(
        f"{API}/orders/1001/shipments",
        json=parcel("P2", ("1", 2), tracking_number="1Z999AA10123456785"),
        headers=brand.headers,
    )
    assert second.status_code == 201, second.text
    body = second.json()
    assert body["version"] == 3
    assert (body["lines"][0]["status"], body["lines"][0]["shipped_quantity"]) == ("shipped", 3)
    assert body["lines"][1]["status"] == "in_stock"
    assert [(s["ref"], s["lines"]) for s in body["shipments"]] == [
        ("P1", [{"line": "1", "quantity": 1}]),
        ("P2", [{"line": "1", "quantity": 2}]),
    ]

    one = await client.patch(
        f"{API}/orders/1001/shipments/P1", json={"status": "delivered"}, headers=brand.headers
    )
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["version"] == 4
    assert body["lines"][0]["status"] == "shipped"
    assert body["shipments"][0]["status"] == "delivered"
    assert body["shipments"][0]["delivered_at"] is not None

    both = await client.patch(
        f"{API}/orders/1001/shipments/P2", json={"status": "delivered"}, headers=brand.headers
    )
    assert both.status_code == 200, both.text
    body = both.json()
    assert body["version"] == 5
    assert body["lines"][0]["status"] == "delivered"
    assert body["lines"][1]["status"] == "in_stock"
    assert [kind for _, kind in await brand_events(db, brand.id)] == [
        "order_created",
        "shipment_created",
        "shipment_created",
        "shipment_updated",
        "shipment_updated",
    ]
    assert (await client.get(f"{API}/orders/1001", headers=brand.headers)).json() == body


async def test_inline_parcels_settle_line_statuses_and_resend_is_unchanged(client, brand):
    payload = order(
        lines=[line("1", "MUG-BLUE", 3), line("2", "LAMP-OAK", 1)],
        shipments=[parcel("P1", ("1", 1)), parcel("P2", ("1", 2), ("2", 1), status="delivered")],
    )
    created = await client.post(f"{API}/orders", json=payload, headers=brand.headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert [(x["status"], x["shipped_quantity"]) for x in body["lines"]] == [
        ("shipped", 3),
        ("delivered", 1),
    ]
    again = await client.post(f"{API}/orders", json=payload, headers=brand.headers)
    assert again.status_code == 200
    assert again.json() == body


async def test_upsert_after_a_posted_shipment_keeps_the_parcel_and_is_unchanged(client, brand):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    shipped = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 2)), headers=brand.headers
    )
    assert shipped.status_code == 201

    again = await client.post(f"{API}/orders", json=order(), headers=brand.headers)

    assert again.status_code == 200, again.text
    assert again.json() == shipped.json()
    assert again.json()["lines"][0]["status"] == "shipped"


async def test_checkpoints_are_newest_first_and_the_newest_sets_the_status(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    await client.post(
        f"{API}/orders/1001/shipments",
        json=parcel("P1", ("1", 2), status="label_created"),
        headers=brand.headers,
    )
    url = f"{API}/orders/1001/shipments/P1/checkpoints"

    def scan(at: str, status: str, city: str) -> dict[str, object]:
        return {
            "occurred_at": at,
            "status": status,
            "description": f"{status} at {city}",
            "city": city,
            "country": "US",
        }

    first = await client.post(
        url, json=scan("2026-11-02T08:00:00Z", "in_transit", "Reno"), headers=brand.headers
    )
    assert first.status_code == 201, first.text
    assert first.json()["shipments"][0]["status"] == "in_transit"
    assert utc(first.json()["shipments"][0]["shipped_at"]) == dt.datetime(
        2026, 11, 2, 8, tzinfo=dt.UTC
    )

    third = await client.post(
        url,
        json=scan("2026-11-03T09:30:00-07:00", "out_for_delivery", "Oakland"),
        headers=brand.headers,
    )
    assert third.status_code == 201
    # A late-arriving older scan is listed in its place but does not move the status back.
    second = await client.post(
        url, json=scan("2026-11-02T20:00:00Z", "in_transit", "Sacramento"), headers=brand.headers
    )
    assert second.status_code == 201
    body = second.json()
    parcel_view = body["shipments"][0]
    assert parcel_view["status"] == "out_for_delivery"
    assert [c["city"] for c in parcel_view["checkpoints"]] == ["Oakland", "Sacramento", "Reno"]
    assert utc(parcel_view["checkpoints"][0]["occurred_at"]) == dt.datetime(
        2026, 11, 3, 16, 30, tzinfo=dt.UTC
    )
    assert parcel_view["checkpoints"][2] == {
        "occurred_at": parcel_view["checkpoints"][2]["occurred_at"],
        "status": "in_transit",
        "description": "in_transit at Reno",
        "city": "Reno",
        "region": None,
        "country": "US",
    }
    assert body["version"] == 5  # created, shipment, three scans

    delivered = await client.post(
        url, json=scan("2026-11-04T12:00:00Z", "delivered", "Oakland"), headers=brand.headers
    )
    body = delivered.json()
    assert body["shipments"][0]["status"] == "delivered"
    assert utc(body["shipments"][0]["delivered_at"]) == dt.datetime(2026, 11, 4, 12, tzinfo=dt.UTC)
    assert body["lines"][0]["status"] == "delivered"
    assert len(body["shipments"][0]["checkpoints"]) == 4
    kinds = [kind for _, kind in await brand_events(db, brand.id)]
    assert kinds.count("checkpoint_added") == 4
    assert await count(db, schema.checkpoints) == 4


async def test_carrier_eta_past_promised_date_marks_the_parcel_delayed(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    created = await client.post(
        f"{API}/orders/1001/shipments",
        json=parcel("P1", ("1", 2), promised_date="2026-11-05"),
        headers=brand.headers,
    )
    assert created.json()["shipments"][0]["delayed"] is False
    url = f"{API}/orders/1001/shipments/P1"

    late = await client.patch(url, json={"carrier_eta": "2026-11-08"}, headers=brand.headers)
    assert late.status_code == 200, late.text
    shipment = late.json()["shipments"][0]
    assert (shipment["carrier_eta"], shipment["promised_date"], shipment["delayed"]) == (
        "2026-11-08",
        "2026-11-05",
        True,
    )
    assert late.json()["version"] == 3

    on_time = await client.patch(url, json={"carrier_eta": "2026-11-05"}, headers=brand.headers)
    assert on_time.json()["shipments"][0]["delayed"] is False
    assert on_time.json()["version"] == 4


async def test_patch_that_changes_nothing_keeps_the_version(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    created = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 2)), headers=brand.headers
    )
    before = await brand_events(db, brand.id)

    same = await client.patch(
        f"{API}/orders/1001/shipments/P1", json={"status": "in_transit"}, headers=brand.headers
    )

    assert same.status_code == 200, same.text
    assert same.json() == created.json()
    assert await brand_events(db, brand.id) == before


async def test_a_line_left_out_of_an_upsert_is_cancelled(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    payload = order()
    del payload["lines"][1]

    response = await client.post(f"{API}/orders", json=payload, headers=brand.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2
    assert [(x["ref"], x["status"]) for x in body["lines"]] == [
        ("1", "in_stock"),
        ("2", "cancelled"),
    ]
    assert await count(db, schema.order_lines) == 2
    feed = (await settled_feed(client, brand.headers, db, brand.id))["data"]
    assert feed[-1]["type"] == "order_updated"
    assert "lines.2.status" in feed[-1]["data"]["changes"]


async def test_leaving_out_a_shipped_line_is_409_and_changes_nothing(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 1)), headers=brand.headers
    )
    before = await snapshot(db)
    payload = order()
    del payload["lines"][0]

    response = await client.post(f"{API}/orders", json=payload, headers=brand.headers)

    # Either 409 type fits: the line cannot be cancelled while a parcel carries it.
    assert_problem(response, 409, ("conflict", "quantity-exceeded"))
    assert await snapshot(db) == before
    assert await order_version(db, brand.id, "1001") == 2


async def test_shipping_a_line_beyond_its_quantity_across_two_parcels_is_409(client, brand, db):
    await client.post(f"{API}/orders", json=order(), headers=brand.headers)
    ok = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P1", ("1", 2)), headers=brand.headers
    )
    assert ok.status_code == 201
    before = await snapshot(db)

    response = await client.post(
        f"{API}/orders/1001/shipments", json=parcel("P2", ("2", 1), ("1", 1)), headers=brand.headers
    )

    assert_problem(response, 409, "quantity-exceeded", ["lines[1].line"])
    assert await snapshot(db) == before
    assert await count(db, schema.shipments) == 1
