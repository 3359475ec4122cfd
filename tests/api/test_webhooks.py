"""Webhook endpoints through the API, secret rotation, the delivery log, and planning webhooks."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, update

from app.settings import Settings
from app.storage import schema
from messaging import webhooks
from tests.api.helpers import API, assert_problem, count, order, parcel, utc

pytestmark = pytest.mark.anyio

HOOKS = f"{API}/webhook-endpoints"
URL = "https://hooks.brand.example/whereabouts"
NOW = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)


async def create(client, brand, **overrides: Any) -> dict[str, Any]:
    payload = {"url": URL, "events": ["choice.made"], **overrides}
    response = await client.post(HOOKS, json=payload, headers=brand.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def order_id(db, brand, number: str) -> int:
    async with db.read() as conn:
        return (
            await conn.execute(
                select(schema.orders.c.id).where(
                    schema.orders.c.brand_id == brand.id, schema.orders.c.number == number
                )
            )
        ).scalar_one()


async def webhook_rows(db, brand) -> list[Any]:
    async with db.read() as conn:
        return (
            await conn.execute(
                select(schema.messages)
                .where(
                    schema.messages.c.brand_id == brand.id, schema.messages.c.channel == "webhook"
                )
                .order_by(schema.messages.c.id)
            )
        ).all()


@contextmanager
def statements(db) -> Iterator[list[str]]:
    """Collect the SQL statements run on the database while the block runs."""
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)


def signed_by(secret: str, header: str, webhook_id: str, timestamp: int, body: bytes) -> bool:
    """Check the signature header holds a v1 entry made with `secret` (the test's own HMAC)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    message = f"{webhook_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    return any(
        entry.partition(",")[0] == "v1" and hmac.compare_digest(entry.partition(",")[2], expected)
        for entry in header.split()
    )


# CRUD ---------------------------------------------------------------------------------------


async def test_create_read_change_delete(client, brand, db):
    created = await create(client, brand, events=["choice.made", "shipment.exception"])
    secret = created.pop("secret")
    assert secret.startswith("whsec_")
    assert created["url"] == URL
    assert created["events"] == ["choice.made", "shipment.exception"]
    assert (created["description"], created["disabled"]) == ("", False)
    assert created["previous_secret_until"] is None
    path = f"{HOOKS}/{created['id']}"

    got = await client.get(path, headers=brand.headers)
    assert got.status_code == 200
    assert got.json() == created
    listed = await client.get(HOOKS, headers=brand.headers)
    assert listed.json() == {"data": [created]}
    for response in (got, listed):
        assert secret not in response.text
        assert "secret" not in json.dumps(response.json()).replace("previous_secret_until", "")

    changed = await client.patch(
        path,
        json={"events": ["order.eta_changed"], "description": "ERP", "disabled": True},
        headers=brand.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["order.eta_changed"]
    assert (changed.json()["description"], changed.json()["disabled"]) == ("ERP", True)
    enabled = await client.patch(path, json={"disabled": False}, headers=brand.headers)
    assert enabled.json()["disabled"] is False

    deleted = await client.delete(path, headers=brand.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(await client.get(path, headers=brand.headers), 404, "not-found")
    assert await count(db, schema.webhook_endpoints) == 0


LOCAL = ["http://localhost:8080/hook", "http://127.0.0.1:9000/h", "http://[::1]/h"]
NOT_PUBLIC = [
    *LOCAL,
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.7/h",
    "https://172.16.4.2/h",
    "https://192.168.1.10/h",
    "https://127.0.0.53/h",
    "https://0.0.0.0/h",
    "https://[fc00::1]/h",
    "https://[fe80::1]/h",
    "https://[::ffff:169.254.169.254]/h",
    "https://2130706433/h",
    "https://0x7f.1/h",
    "https://metadata.localhost/h",
]


@pytest.fixture
def allow_private() -> bool:
    return False


@pytest.fixture
def settings(database_url: str, allow_private: bool) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "PUBLIC_URL": "https://track.example.test",
            "WEBHOOK_ALLOW_PRIVATE": str(allow_private).lower(),
        }
    )


@pytest.mark.parametrize("allow_private", [True])
@pytest.mark.parametrize("url", LOCAL)
async def test_plain_http_is_for_the_local_machine_only(client, brand, url):
    assert (await create(client, brand, url=url))["url"] == url


@pytest.mark.parametrize("url", NOT_PUBLIC)
async def test_non_public_addresses_are_refused_by_default(client, brand, db, url):
    response = await client.post(
        HOOKS, json={"url": url, "events": ["choice.made"]}, headers=brand.headers
    )
    body = assert_problem(response, 422, "invalid-fields", ["url"])
    assert body["errors"][0]["message"].startswith("must reach a public address: ")
    assert await count(db, schema.webhook_endpoints) == 0


async def test_public_addresses_and_names_are_accepted(client, brand):
    # Names are not resolved here: the worker resolves and checks them at every delivery.
    for url in ("https://93.184.216.34/h", "https://[2606:4700::1111]/h", URL):
        assert (await create(client, brand, url=url))["url"] == url


async def test_a_url_cannot_be_changed_to_a_non_public_address(client, brand):
    path = f"{HOOKS}/{(await create(client, brand))['id']}"
    for url in ("https://169.254.169.254/latest/meta-data/", "http://localhost:9000/h"):
        response = await client.patch(path, json={"url": url}, headers=brand.headers)
        assert_problem(response, 422, "invalid-fields", ["url"])
    assert (await client.get(path, headers=brand.headers)).json()["url"] == URL
    # Other changes need no new check.
    changed = await client.patch(path, json={"description": "ERP"}, headers=brand.headers)
    assert changed.status_code == 200, changed.text


@pytest.mark.parametrize(
    ("payload", "paths"),
    [
        ({"url": "http://hooks.brand.example/h", "events": ["choice.made"]}, ["url"]),
        ({"url": "https://user:pw@hooks.brand.example/h", "events": ["choice.made"]}, ["url"]),
        ({"url": "ftp://hooks.brand.example/h", "events": ["choice.made"]}, ["url"]),
        ({"url": "javascript:alert(1)", "events": ["choice.made"]}, ["url"]),
        ({"url": "https:///nohost", "events": ["choice.made"]}, ["url"]),
        ({"url": "https://hooks.brand.example:99999/h", "events": ["choice.made"]}, ["url"]),
        ({"url": "http://localhost.evil.example/h", "events": ["choice.made"]}, ["url"]),
        ({"url": URL, "events": ["choice.made", "order.shipped"]}, ["events[1]"]),
        ({"url": URL, "events": []}, ["events"]),
        ({"url": URL}, ["events"]),
        ({"url": URL, "events": ["choice.made"], "secret": "whsec_x"}, ["secret"]),
        ({"url": URL, "events": ["choice.made"], "description": "x" * 201}, ["description"]),
    ],
)
async def test_invalid_endpoints_are_refused_with_paths(client, brand, db, payload, paths):
    response = await client.post(HOOKS, json=payload, headers=brand.headers)
    assert_problem(response, 422, "invalid-fields", paths)
    assert await count(db, schema.webhook_endpoints) == 0


async def test_patch_and_rotate_validate_too(client, brand):
    path = f"{HOOKS}/{(await create(client, brand))['id']}"
    for body, paths in (
        ({"url": None}, ["url"]),
        ({"events": ["nope"]}, ["events[0]"]),
        ({"disabled": "yes"}, ["disabled"]),
    ):
        response = await client.patch(path, json=body, headers=brand.headers)
        assert_problem(response, 422, "invalid-fields", paths)
    for hours in (-1, 169, "24"):
        response = await client.post(
            f"{path}/rotate-secret", json={"overlap_hours": hours}, headers=brand.headers
        )
        assert_problem(response, 422, "invalid-fields", ["overlap_hours"])


async def test_ids_that_name_nothing_are_404(client, brand):
    for path in (f"{HOOKS}/999", f"{HOOKS}/abc", f"{HOOKS}/99999999999999999999999"):
        assert_problem(await client.get(path, headers=brand.headers), 404, "not-found")


async def test_another_brands_endpoints_do_not_exist_for_you(client, brand, other_brand, db):
    theirs = await create(client, other_brand)
    path = f"{HOOKS}/{theirs['id']}"
    async with db.write() as conn:
        await webhooks.plan(conn, other_brand.id, [(None, "choice_made", {"choice": 1})], {}, NOW)
    [delivery] = await webhook_rows(db, other_brand)
    attempts = [
        client.get(path, headers=brand.headers),
        client.patch(path, json={"disabled": True}, headers=brand.headers),
        client.delete(path, headers=brand.headers),
        client.post(f"{path}/rotate-secret", json={}, headers=brand.headers),
        client.get(f"{path}/deliveries", headers=brand.headers),
        client.post(f"{path}/deliveries/{delivery.id}/replay", headers=brand.headers),
    ]
    for attempt in attempts:
        assert_problem(await attempt, 404, "not-found")
    assert (await client.get(HOOKS, headers=brand.headers)).json() == {"data": []}
    # Nothing of theirs changed.
    got = await client.get(path, headers=other_brand.headers)
    assert got.json()["disabled"] is False
    assert len(await webhook_rows(db, other_brand)) == 1


# Rotation -----------------------------------------------------------------------------------


async def test_rotation_signs_with_both_secrets_until_the_overlap_ends(client, brand, db):
    created = await create(client, brand)
    path = f"{HOOKS}/{created['id']}"
    rotated = await client.post(
        f"{path}/rotate-secret", json={"overlap_hours": 24}, headers=brand.headers
    )
    assert rotated.status_code == 200, rotated.text
    old, new = created["secret"], rotated.json()["secret"]
    assert new != old
    until = utc(rotated.json()["previous_secret_until"])
    assert dt.timedelta(hours=23, minutes=59) < until - utc(rotated.json()["updated_at"])
    got = await client.get(path, headers=brand.headers)
    assert old not in got.text
    assert new not in got.text

    body = b'{"type":"choice.made"}'
    for now, expected in (
        (until - dt.timedelta(seconds=1), {old, new}),
        (until, {new}),
        (until + dt.timedelta(hours=1), {new}),
    ):
        async with db.read() as conn:
            secrets = await webhooks.active_secrets(conn, created["id"], now)
        assert set(secrets) == expected
        header = webhooks.sign(secrets, "msg_x", 1_700_000_000, body)
        assert len(header.split()) == len(expected)
        assert signed_by(new, header, "msg_x", 1_700_000_000, body)
        assert signed_by(old, header, "msg_x", 1_700_000_000, body) == (old in expected)


async def test_rotation_without_overlap_retires_the_old_secret_at_once(client, brand, db):
    created = await create(client, brand)
    path = f"{HOOKS}/{created['id']}"
    first = (await client.post(f"{path}/rotate-secret", json={}, headers=brand.headers)).json()
    assert first["previous_secret_until"] is not None
    second = await client.post(
        f"{path}/rotate-secret", json={"overlap_hours": 0}, headers=brand.headers
    )
    assert second.json()["previous_secret_until"] is None
    async with db.read() as conn:
        secrets = await webhooks.active_secrets(conn, created["id"], NOW)
    assert secrets == [second.json()["secret"]]


async def test_a_disabled_endpoint_has_no_signing_secrets(client, brand, db):
    created = await create(client, brand)
    await client.patch(f"{HOOKS}/{created['id']}", json={"disabled": True}, headers=brand.headers)
    async with db.read() as conn:
        assert await webhooks.active_secrets(conn, created["id"], NOW) == []
        assert await webhooks.active_secrets(conn, 123456, NOW) == []


# Planning -----------------------------------------------------------------------------------


async def test_plan_queues_one_row_per_subscribed_enabled_endpoint(client, brand, other_brand, db):
    assert (
        await client.post(f"{API}/orders", json=order("1001"), headers=brand.headers)
    ).is_success
    oid = await order_id(db, brand, "1001")
    choices = await create(client, brand, events=["choice.made"])
    windows = await create(
        client, brand, url="https://ops.brand.example/h", events=["order.window_at_risk"]
    )
    off = await create(client, brand, url="https://off.brand.example/h", events=["choice.made"])
    await client.patch(f"{HOOKS}/{off['id']}", json={"disabled": True}, headers=brand.headers)
    await create(client, other_brand, events=["choice.made", "order.window_at_risk"])
    before = len(await webhook_rows(db, brand))

    expired = {"lines": [{"line": "2", "sku": "LAMP-OAK"}], "default_action": "keep"}
    new_events = [
        (oid, "choice_made", {"choice": 9, "line": "2", "decision": "keep", "via": "sms"}),
        (oid, "window_expired", json.dumps(expired)),  # the ETA engine hands over JSON text
        (oid, "stock_set", {"sku": "LAMP-OAK"}),
        (oid, "message_failed", {"message": 5, "channel": "webhook"}),
    ]
    async with db.write() as conn:
        queued = await webhooks.plan(conn, brand.id, new_events, {oid: "1001"}, NOW)
    assert queued == 2
    rows = (await webhook_rows(db, brand))[before:]
    assert [(r.endpoint_id, r.address) for r in rows] == [
        (choices["id"], URL),
        (windows["id"], "https://ops.brand.example/h"),
    ]
    for row in rows:
        assert (row.state, row.due_at, row.attempts, row.order_id) == ("queued", NOW, 0, oid)
        assert (row.locale, row.timezone, row.created_at, row.updated_at) == ("en", "UTC", NOW, NOW)
        assert row.content["webhook_id"].startswith("msg_")
        assert "ada@example.com" not in row.content["body"]
        assert "+14155550123" not in row.content["body"]
    made, window = (json.loads(r.content["body"]) for r in rows)
    assert made == {
        "type": "choice.made",
        "timestamp": "2026-11-20T09:30:00Z",
        "data": {"order": "1001", "choice": 9, "line": "2", "decision": "keep", "via": "sms"},
    }
    assert [r.content["type"] for r in rows] == ["choice.made", "order.window_at_risk"]
    assert window["data"] == {"order": "1001", "reason": "expired", **expired}
    assert len(await webhook_rows(db, other_brand)) == 0


async def test_plan_costs_one_query_without_endpoints_and_none_without_news(brand, db):
    relevant = [(None, "choice_made", {"choice": 1}), (None, "eta_changed", {"lines": []})]
    async with db.write() as conn:
        with statements(db) as seen:
            assert await webhooks.plan(conn, brand.id, relevant, {}, NOW) == 0
        assert len(seen) == 1
        assert "webhook_endpoints" in seen[0]
        with statements(db) as seen:
            assert await webhooks.plan(conn, brand.id, [(None, "stock_set", {})], {}, NOW) == 0
        assert seen == []
    assert await count(db, schema.messages, channel="webhook") == 0


async def test_plan_tells_of_parcels_that_went_wrong(client, brand, db):
    payload = order("1001", shipments=[parcel("P1", ("1", 2)), parcel("P2", ("2", 1))])
    assert (await client.post(f"{API}/orders", json=payload, headers=brand.headers)).is_success
    lost = await client.patch(
        f"{API}/orders/1001/shipments/P1", json={"status": "lost"}, headers=brand.headers
    )
    assert lost.status_code == 200, lost.text
    oid = await order_id(db, brand, "1001")
    hook = await create(client, brand, events=["shipment.exception"])
    before = len(await webhook_rows(db, brand))
    new_events = [
        (oid, "shipment_updated", {"changes": ["shipments.P1.status"]}),
        # P2 is still in transit: a status change, but not an exception.
        (oid, "shipment_updated", {"changes": ["shipments.P2.status"]}),
        (oid, "checkpoint_added", {"shipment": "P2", "status": "in_transit", "changes": []}),
    ]
    async with db.write() as conn:
        assert await webhooks.plan(conn, brand.id, new_events, {oid: "1001"}, NOW) == 1
    [row] = (await webhook_rows(db, brand))[before:]
    assert row.endpoint_id == hook["id"]
    assert json.loads(row.content["body"])["data"] == {
        "order": "1001",
        "shipment": "P1",
        "status": "lost",
        "carrier": "ups",
        "tracking_number": "1Z999AA10123456784",
    }


# Delivery log and replay ----------------------------------------------------------------------


async def test_delivery_log_filters_and_replay_keeps_the_webhook_id(client, brand, db):
    hook = await create(client, brand)
    other = await create(client, brand, url="https://other.brand.example/h")
    async with db.write() as conn:
        events = [(None, "choice_made", {"choice": n}) for n in (1, 2, 3)]
        assert await webhooks.plan(conn, brand.id, events, {}, NOW) == 6
    rows = [r for r in await webhook_rows(db, brand) if r.endpoint_id == hook["id"]]
    failed = rows[0]
    async with db.write() as conn:
        await conn.execute(
            update(schema.messages)
            .where(schema.messages.c.id == failed.id)
            .values(state="failed", attempts=9, error_code="http:500", error_detail="answered 500")
        )
    path = f"{HOOKS}/{hook['id']}/deliveries"
    log = (await client.get(path, headers=brand.headers)).json()
    assert [d["id"] for d in log["data"]] == [r.id for r in reversed(rows)]
    assert log["next_cursor"] is None
    page = (await client.get(path, params={"limit": "2"}, headers=brand.headers)).json()
    assert [d["id"] for d in page["data"]] == [rows[2].id, rows[1].id]
    rest = await client.get(path, params={"after": page["next_cursor"]}, headers=brand.headers)
    assert [d["id"] for d in rest.json()["data"]] == [failed.id]
    only = (await client.get(path, params={"state": "failed"}, headers=brand.headers)).json()
    assert only["data"] == [
        {
            "id": failed.id,
            "webhook_id": failed.content["webhook_id"],
            "type": "choice.made",
            "state": "failed",
            "attempts": 9,
            "error_code": "http:500",
            "error_detail": "answered 500",
            "due_at": "2026-11-20T09:30:00Z",
            "created_at": "2026-11-20T09:30:00Z",
            "sent_at": None,
        }
    ]
    for params in ({"state": "lost"}, {"limit": "0"}, {"after": "x"}):
        assert_problem(
            await client.get(path, params=params, headers=brand.headers), 400, "invalid-parameter"
        )

    replay = await client.post(f"{path}/{failed.id}/replay", headers=brand.headers)
    assert replay.status_code == 202, replay.text
    assert replay.json()["webhook_id"] == failed.content["webhook_id"]
    assert (replay.json()["state"], replay.json()["attempts"]) == ("queued", 0)
    async with db.read() as conn:
        copy = (
            await conn.execute(
                select(schema.messages).where(schema.messages.c.id == replay.json()["id"])
            )
        ).one()
    assert copy.content == failed.content
    assert (copy.endpoint_id, copy.address, copy.channel) == (hook["id"], URL, "webhook")

    # A delivery of another endpoint is not found under this one.
    theirs = next(r for r in await webhook_rows(db, brand) if r.endpoint_id == other["id"])
    response = await client.post(f"{path}/{theirs.id}/replay", headers=brand.headers)
    assert_problem(response, 404, "not-found")
    await client.patch(f"{HOOKS}/{hook['id']}", json={"disabled": True}, headers=brand.headers)
    response = await client.post(f"{path}/{failed.id}/replay", headers=brand.headers)
    assert_problem(response, 409, "conflict")


async def test_a_new_url_applies_to_deliveries_still_waiting(client, brand, db):
    hook = await create(client, brand)
    async with db.write() as conn:
        await webhooks.plan(conn, brand.id, [(None, "choice_made", {"choice": 1})], {}, NOW)
    moved = "https://new.brand.example/h"
    response = await client.patch(
        f"{HOOKS}/{hook['id']}", json={"url": moved}, headers=brand.headers
    )
    assert response.json()["url"] == moved
    [row] = await webhook_rows(db, brand)
    assert row.address == moved
