"""The message log through the API: failed and unknown first, masked addresses, retries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from app.api.messages import mask_address
from app.storage import schema
from tests.api.helpers import API, assert_problem, order, utc

pytestmark = pytest.mark.anyio

MESSAGES = f"{API}/messages"
EMAIL = "jane.doe@example.com"
PHONE = "+14155550123"
CREATED = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


async def place(client, brand, db, number: str) -> int:
    response = await client.post(f"{API}/orders", json=order(number), headers=brand.headers)
    assert response.status_code == 201, response.text
    async with db.read() as conn:
        return (
            await conn.execute(
                select(schema.orders.c.id).where(
                    schema.orders.c.brand_id == brand.id, schema.orders.c.number == number
                )
            )
        ).scalar_one()


async def message(db, brand, order_id: int | None, **values: Any) -> int:
    """Store a message row as the dispatcher would have left it."""
    channel = values.pop("channel", "email")
    row = {
        "brand_id": brand.id,
        "order_id": order_id,
        "channel": channel,
        "address": EMAIL if channel == "email" else PHONE,
        "state": "failed",
        "due_at": CREATED,
        "attempts": 3,
        "content": {"subject": "Your lamp is late", "text": "Sorry: it ships on Dec 3."},
        "created_at": CREATED,
        "updated_at": CREATED,
        **values,
    }
    async with db.write() as conn:
        result = await conn.execute(schema.messages.insert().values(row))
        return int(result.inserted_primary_key[0])


async def stored(db, message_id: int) -> Any:
    async with db.read() as conn:
        return (
            await conn.execute(select(schema.messages).where(schema.messages.c.id == message_id))
        ).one()


def test_addresses_are_masked():
    assert mask_address("email", "jane@example.com") == "j***@example.com"
    assert mask_address("sms", "+14155550123") == "+1******0123"
    assert mask_address("sms", "+44207") == "******"
    assert mask_address("webhook", "https://h.example/in?token=abc") == "https://h.example/in"


async def test_failed_and_unknown_are_listed_newest_first_and_masked(client, brand, db):
    oid = await place(client, brand, db, "1001")
    failed = await message(
        db,
        brand,
        oid,
        error_code="21211",
        error_detail="invalid number",
        provider="twilio",
        channel="sms",
    )
    unknown = await message(db, brand, oid, state="unknown", provider="sendgrid")
    await message(db, brand, oid, state="sent", sent_at=CREATED)

    response = await client.get(MESSAGES, headers=brand.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    assert [m["id"] for m in page["data"]] == [unknown, failed]
    assert page["next_cursor"] is None
    assert page["data"][1] == {
        "id": failed,
        "order": "1001",
        "channel": "sms",
        "address": "+1******0123",
        "state": "failed",
        "attempts": 3,
        "provider": "twilio",
        "provider_id": None,
        "error_code": "21211",
        "error_detail": "invalid number",
        "created_at": "2026-11-20T09:00:00Z",
        "sent_at": None,
        "status_at": None,
    }
    assert page["data"][0]["address"] == "j***@example.com"
    assert EMAIL not in response.text
    assert PHONE not in response.text


async def test_filters_by_state_channel_and_order_with_a_cursor(client, brand, db):
    first = await place(client, brand, db, "1001")
    second = await place(client, brand, db, "1002")
    ids = [
        await message(db, brand, first, state="delivered"),
        await message(db, brand, second, state="delivered", channel="sms"),
        await message(db, brand, first, state="bounced"),
        await message(db, brand, second, state="delivered"),
    ]

    async def listed(**params: str) -> list[int]:
        response = await client.get(MESSAGES, params=params, headers=brand.headers)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["data"]]

    assert await listed(state="delivered") == [ids[3], ids[1], ids[0]]
    assert await listed(state="delivered,bounced", order="1001") == [ids[2], ids[0]]
    assert await listed(state="delivered", channel="sms") == [ids[1]]
    assert await listed(state="delivered", order="nope") == []

    page = await client.get(
        MESSAGES, params={"state": "delivered", "limit": "2"}, headers=brand.headers
    )
    assert [m["id"] for m in page.json()["data"]] == [ids[3], ids[1]]
    cursor = page.json()["next_cursor"]
    assert await listed(state="delivered", limit="2", after=cursor) == [ids[0]]

    for params in (
        {"state": "lost"},
        {"channel": "fax"},
        {"limit": "0"},
        {"limit": "201"},
        {"after": "-1"},
    ):
        response = await client.get(MESSAGES, params=params, headers=brand.headers)
        assert_problem(response, 400, "invalid-parameter")


async def test_one_message_shows_what_it_said(client, brand, db):
    oid = await place(client, brand, db, "1001")
    mid = await message(db, brand, oid, locale="fr-FR")
    response = await client.get(f"{MESSAGES}/{mid}", headers=brand.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == {"subject": "Your lamp is late", "text": "Sorry: it ships on Dec 3."}
    assert (body["address"], body["locale"], body["order"]) == ("j***@example.com", "fr-FR", "1001")
    assert utc(body["due_at"]) == CREATED
    assert EMAIL not in response.text
    for missing in ("999999", "abc", "99999999999999999999999"):
        response = await client.get(f"{MESSAGES}/{missing}", headers=brand.headers)
        assert_problem(response, 404, "not-found")


async def test_failed_or_unknown_messages_can_be_retried(client, brand, db):
    oid = await place(client, brand, db, "1001")
    for state in ("failed", "unknown"):
        mid = await message(
            db,
            brand,
            oid,
            state=state,
            attempts=5,
            error_code="http:500",
            error_detail="answered 500",
            lease_owner="worker-1",
            lease_until=CREATED,
        )
        before = dt.datetime.now(dt.UTC)
        response = await client.post(f"{MESSAGES}/{mid}/retry", headers=brand.headers)
        assert response.status_code == 202, response.text
        assert (response.json()["state"], response.json()["attempts"]) == ("queued", 0)
        row = await stored(db, mid)
        assert (row.state, row.attempts, row.lease_owner, row.lease_until) == (
            "queued",
            0,
            None,
            None,
        )
        assert (row.error_code, row.error_detail) == (None, None)
        assert before - dt.timedelta(seconds=1) <= row.due_at <= dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("state", ["queued", "sending", "sent", "delivered", "suppressed"])
async def test_other_states_cannot_be_retried(client, brand, db, state):
    mid = await message(db, brand, None, state=state)
    response = await client.post(f"{MESSAGES}/{mid}/retry", headers=brand.headers)
    assert_problem(response, 409, "conflict")
    assert (await stored(db, mid)).state == state


async def test_another_brands_messages_do_not_exist_for_you(client, brand, other_brand, db):
    theirs = await message(db, other_brand, None)
    mine = await message(db, brand, None)
    listed = (await client.get(MESSAGES, headers=brand.headers)).json()
    assert [m["id"] for m in listed["data"]] == [mine]
    assert_problem(
        await client.get(f"{MESSAGES}/{theirs}", headers=brand.headers), 404, "not-found"
    )
    response = await client.post(f"{MESSAGES}/{theirs}/retry", headers=brand.headers)
    assert_problem(response, 404, "not-found")
    assert (await stored(db, theirs)).state == "failed"
