"""Provider status callbacks: signed by Twilio and SendGrid, deduplicated, never backwards."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from starlette.applications import Starlette
from twilio.request_validator import RequestValidator

from app.main import create_app
from app.settings import Settings
from app.storage.database import Database
from app.storage.schema import events, message_statuses, messages, suppressions
from messaging import status
from tests.conftest import make_brand

pytestmark = pytest.mark.anyio

PUBLIC_URL = "https://track.example.test"
AUTH_TOKEN = "twilio-test-auth-token-0123456789"
NOW = dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.UTC)
FORM = "application/x-www-form-urlencoded"
PHONE = "+14155550123"
EMAIL = "ada@example.com"
SID = "SM" + "a" * 32
SG_KEY = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(
    SG_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def hook_settings(database_url: str, **extra: str) -> Settings:
    env = {
        "DATABASE_URL": database_url,
        "PUBLIC_URL": PUBLIC_URL,
        "SECRET_KEY": "status-tests-" + "s" * 40,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": SG_PUBLIC,
    }
    return Settings.from_env({**env, **extra})


@pytest.fixture
def settings(database_url: str) -> Settings:
    return hook_settings(database_url)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.close()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings, clock=lambda: NOW)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def brand_id(db: Database) -> int:
    return (await make_brand(db, "acme")).id


async def insert_message(
    db: Database,
    brand_id: int,
    *,
    channel: str = "sms",
    address: str = PHONE,
    state: str = "sent",
    provider: str = "twilio",
    provider_id: str | None = SID,
    content: dict[str, Any] | None = None,
) -> int:
    """Put a message straight into the outbox table, as the dispatcher would leave it."""
    async with db.write() as conn:
        result = await conn.execute(
            messages.insert()
            .values(
                brand_id=brand_id,
                channel=channel,
                address=address,
                state=state,
                due_at=NOW,
                provider=provider,
                provider_id=provider_id,
                content=content,
                sent_at=NOW if state != "queued" else None,
                created_at=NOW,
                updated_at=NOW,
            )
            .returning(messages.c.id)
        )
        return int(result.scalar_one())


async def message_row(db: Database, message_id: int) -> Any:
    async with db.read() as conn:
        return (await conn.execute(select(messages).where(messages.c.id == message_id))).one()


async def count(db: Database, table: Any, *where: Any) -> int:
    async with db.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        )


async def failed_events(db: Database) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(events.c.data).where(events.c.type == "message_failed").order_by(events.c.id)
        )
        return [row.data for row in rows]


# --- Twilio ----------------------------------------------------------------------------------


def twilio_params(message_status: str, sid: str = SID, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "b" * 32,
        "MessageStatus": message_status,
        "SmsStatus": message_status,
        "To": PHONE,
        "From": "+15005550006",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def post_twilio(
    client: httpx.AsyncClient,
    message_id: int,
    params: dict[str, str],
    *,
    signed_url: str | None = None,
    signature: str | None = None,
    body: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> httpx.Response:
    path = f"/hooks/twilio/status/{message_id}"
    url = signed_url or PUBLIC_URL + path
    headers = {"Content-Type": FORM, **(extra_headers or {})}
    signature = signature or RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    if signature != "-":
        headers["X-Twilio-Signature"] = signature
    return await client.post(path, content=body or urlencode(params), headers=headers)


async def test_a_signed_twilio_callback_moves_the_message_and_is_stored_without_numbers(
    client, db, brand_id
):
    message_id = await insert_message(db, brand_id)
    response = await post_twilio(client, message_id, twilio_params("delivered"))
    assert response.status_code == 204
    row = await message_row(db, message_id)
    assert (row.state, row.status_at) == ("delivered", NOW)
    async with db.read() as conn:
        stored = (await conn.execute(select(message_statuses))).one()
    assert stored.external_id == f"{SID}:delivered"
    assert (stored.source, stored.status, stored.message_id) == ("twilio", "delivered", message_id)
    assert PHONE not in json.dumps(stored.data)
    assert stored.data["MessageStatus"] == "delivered"


async def test_forged_or_unsigned_twilio_callbacks_are_refused(client, db, brand_id):
    message_id = await insert_message(db, brand_id)
    params = twilio_params("failed", ErrorCode="30003")
    good = RequestValidator(AUTH_TOKEN).compute_signature(
        f"{PUBLIC_URL}/hooks/twilio/status/{message_id}", params
    )
    tampered = {**params, "MessageStatus": "faileD"}
    attempts = {
        "one byte changed": await post_twilio(
            client, message_id, params, signature=good, body=urlencode(tampered)
        ),
        "signed for the Host header's URL": await post_twilio(
            client,
            message_id,
            params,
            signed_url=f"http://testserver/hooks/twilio/status/{message_id}",
        ),
        "signed for another message": await post_twilio(
            client,
            message_id,
            params,
            signed_url=f"{PUBLIC_URL}/hooks/twilio/status/{message_id + 1}",
        ),
        "signed for forwarded headers": await post_twilio(
            client,
            message_id,
            params,
            signed_url=f"https://evil.example/hooks/twilio/status/{message_id}",
            extra_headers={
                "Host": "evil.example",
                "X-Forwarded-Host": "evil.example",
                "X-Forwarded-Proto": "https",
            },
        ),
        "no signature": await post_twilio(client, message_id, params, signature="-"),
        "garbage signature": await post_twilio(client, message_id, params, signature="x" * 28),
    }
    for name, response in attempts.items():
        assert response.status_code == 403, name
        assert response.text == "forbidden\n", name
    assert (await message_row(db, message_id)).state == "sent"
    assert await count(db, message_statuses) == 0


async def test_without_secrets_configured_every_callback_is_refused(database_url, brand_id, db):
    message_id = await insert_message(db, brand_id)
    unset = {"TWILIO_AUTH_TOKEN": "", "SENDGRID_WEBHOOK_PUBLIC_KEY": ""}
    application = create_app(hook_settings(database_url, **unset), clock=lambda: NOW)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            twilio = await post_twilio(http, message_id, twilio_params("delivered"))
            sendgrid = await post_sendgrid(http, batch())
    assert (twilio.status_code, sendgrid.status_code) == (403, 403)
    assert (await message_row(db, message_id)).state == "sent"


async def test_a_query_string_is_part_of_the_signed_url(client, db, brand_id):
    message_id = await insert_message(db, brand_id)
    params = twilio_params("delivered")
    path = f"/hooks/twilio/status/{message_id}?attempt=2"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, params)
    headers = {"Content-Type": FORM, "X-Twilio-Signature": signature}
    assert (await client.post(path, content=urlencode(params), headers=headers)).status_code == 204
    unsigned_query = await client.post(
        f"/hooks/twilio/status/{message_id}?attempt=3", content=urlencode(params), headers=headers
    )
    assert unsigned_query.status_code == 403


async def test_a_repeated_failure_callback_changes_nothing_the_second_time(client, db, brand_id):
    message_id = await insert_message(db, brand_id)
    params = twilio_params("undelivered", ErrorCode="30003", ErrorMessage="Unreachable handset")
    for _ in range(2):
        assert (await post_twilio(client, message_id, params)).status_code == 204
    row = await message_row(db, message_id)
    assert (row.state, row.error_code, row.error_detail) == (
        "undelivered",
        "30003",
        "Unreachable handset",
    )
    assert await count(db, message_statuses) == 1
    assert await failed_events(db) == [
        {"message": message_id, "channel": "sms", "state": "undelivered", "error_code": "30003"}
    ]


async def test_statuses_out_of_order_never_move_backwards(client, db, brand_id):
    message_id = await insert_message(db, brand_id, state="sending", provider_id=None)
    for reported in ("delivered", "sent", "queued", "failed"):
        response = await post_twilio(client, message_id, twilio_params(reported))
        assert response.status_code == 204
    row = await message_row(db, message_id)
    assert row.state == "delivered"
    assert row.error_code is None
    assert await count(db, message_statuses) == 4
    assert await failed_events(db) == []


async def test_an_unknown_message_is_settled_and_learns_its_sid(client, db, brand_id):
    message_id = await insert_message(db, brand_id, state="unknown", provider_id=None)
    assert (await post_twilio(client, message_id, twilio_params("sent"))).status_code == 204
    row = await message_row(db, message_id)
    assert (row.state, row.provider_id) == ("sent", SID)
    other = "SM" + "c" * 32
    await post_twilio(client, message_id, twilio_params("delivered", sid=other))
    row = await message_row(db, message_id)
    assert (row.state, row.provider_id) == ("delivered", SID)


async def test_callbacks_for_messages_we_do_not_have_are_answered_and_dropped(client, db, brand_id):
    email_id = await insert_message(db, brand_id, channel="email", address=EMAIL)
    for message_id in (email_id + 1000, email_id, 2**64):
        response = await post_twilio(client, message_id, twilio_params("delivered"))
        assert response.status_code == 204, message_id
    assert await count(db, message_statuses) == 0
    assert (await message_row(db, email_id)).state == "sent"


async def test_a_signed_callback_without_a_status_is_a_bad_request(client, db, brand_id):
    message_id = await insert_message(db, brand_id)
    response = await post_twilio(client, message_id, {"MessageSid": SID})
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/invalid-parameter"


# --- SendGrid --------------------------------------------------------------------------------


def sign_sendgrid(body: bytes, timestamp: str, key: ec.EllipticCurvePrivateKey = SG_KEY) -> str:
    """Sign as SendGrid does: ECDSA P-256 over timestamp + body, DER, base64."""
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def sg_event(message_id: int, event: str, event_id: str, at: int = 0, **extra: Any) -> dict:
    return {
        "email": EMAIL,
        "timestamp": int(NOW.timestamp()) - 600 + at,
        "event": event,
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.filterdrecv-p3las1-1.0",
        "whereabouts_message_id": str(message_id),
        "ip": "198.51.100.7",
        **extra,
    }


async def post_sendgrid(
    client: httpx.AsyncClient,
    body: bytes,
    *,
    timestamp: str | None = None,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    timestamp = timestamp or stamp(0)
    sent = {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "X-Twilio-Email-Event-Webhook-Signature": signature or sign_sendgrid(body, timestamp),
        **(headers or {}),
    }
    return await client.post("/hooks/sendgrid/events", content=body, headers=sent)


def stamp(minutes: float) -> str:
    """Return a webhook timestamp this many minutes from the service clock's now."""
    return str(int((NOW + dt.timedelta(minutes=minutes)).timestamp()))


def batch(*items: dict) -> bytes:
    return json.dumps(list(items)).encode()


async def test_a_sendgrid_batch_dedupes_and_keeps_the_furthest_state(client, db, brand_id):
    message_id = await insert_message(
        db,
        brand_id,
        channel="email",
        address=EMAIL,
        state="unknown",
        provider="sendgrid",
        provider_id=None,
    )
    body = batch(
        sg_event(message_id, "delivered", "ev-2", at=5),
        sg_event(message_id, "processed", "ev-1", at=1),
        sg_event(message_id, "delivered", "ev-2", at=5),
        sg_event(message_id, "open", "ev-3", at=60, useragent="Mail/1.0"),
        sg_event(message_id, "deferred", "ev-4", at=2, response="try later"),
    )
    response = await post_sendgrid(client, body)
    assert response.status_code == 200
    row = await message_row(db, message_id)
    assert row.state == "delivered"
    assert row.provider_id == "14c5d75ce93"
    assert row.status_at == NOW - dt.timedelta(seconds=595)
    async with db.read() as conn:
        stored = (
            await conn.execute(select(message_statuses).order_by(message_statuses.c.id))
        ).all()
    assert [(s.external_id, s.status) for s in stored] == [
        ("ev-2", "delivered"),
        ("ev-1", "processed"),
        ("ev-3", "open"),
        ("ev-4", "deferred"),
    ]
    for s in stored:
        assert EMAIL not in json.dumps(s.data)
        assert "198.51.100.7" not in json.dumps(s.data)
    # The same batch again (SendGrid retries): nothing new.
    assert (await post_sendgrid(client, body)).status_code == 200
    assert await count(db, message_statuses) == 4


async def test_a_bounce_suppresses_the_address_and_reports_the_failure(client, db, brand_id):
    message_id = await insert_message(
        db, brand_id, channel="email", address=EMAIL, provider="sendgrid", provider_id="14c5d75ce93"
    )
    bounce = sg_event(
        message_id, "bounce", "ev-b", type="bounce", status="5.1.1", reason="550 5.1.1 no such user"
    )
    late_delivered = sg_event(message_id, "delivered", "ev-d", at=9)
    assert (await post_sendgrid(client, batch(bounce, late_delivered))).status_code == 200
    row = await message_row(db, message_id)
    assert (row.state, row.error_code, row.error_detail) == (
        "bounced",
        "5.1.1",
        "550 5.1.1 no such user",
    )
    async with db.read() as conn:
        suppressed = (await conn.execute(select(suppressions))).all()
    assert [(s.brand_id, s.channel, s.address, s.topic, s.reason) for s in suppressed] == [
        (brand_id, "email", EMAIL, "all", "bounce")
    ]
    assert await failed_events(db) == [
        {"message": message_id, "channel": "email", "state": "bounced", "error_code": "5.1.1"}
    ]


@pytest.mark.parametrize(
    ("event", "extra", "state", "suppressed"),
    [
        ("spamreport", {}, "sent", ("all", "spamreport")),
        ("unsubscribe", {}, "sent", ("all", "unsubscribe")),
        ("dropped", {"reason": "Bounced Address"}, "failed", ("all", "dropped")),
        ("dropped", {"reason": "Spam Content"}, "failed", None),
        ("bounce", {"type": "blocked", "reason": "IP listed"}, "undelivered", None),
        ("click", {"url": "https://track.example.test/t/secret"}, "sent", None),
    ],
)
async def test_what_each_sendgrid_event_does(client, db, brand_id, event, extra, state, suppressed):
    message_id = await insert_message(
        db, brand_id, channel="email", address=EMAIL, provider="sendgrid", provider_id="x"
    )
    assert (
        await post_sendgrid(client, batch(sg_event(message_id, event, "ev", **extra)))
    ).status_code == 200
    assert (await message_row(db, message_id)).state == state
    async with db.read() as conn:
        rows = (await conn.execute(select(suppressions.c.topic, suppressions.c.reason))).all()
    assert [tuple(r) for r in rows] == ([suppressed] if suppressed else [])
    async with db.read() as conn:
        data = (await conn.execute(select(message_statuses.c.data))).scalar_one()
    assert "url" not in data


async def test_unsigned_stale_or_tampered_sendgrid_posts_are_refused(client, db, brand_id):
    message_id = await insert_message(
        db, brand_id, channel="email", address=EMAIL, provider="sendgrid", provider_id="x"
    )
    body = batch(sg_event(message_id, "bounce", "ev-1", type="bounce"))
    other_key = ec.generate_private_key(ec.SECP256R1())
    now_ts = stamp(0)
    attempts = {
        "stale": await post_sendgrid(client, body, timestamp=stamp(-6)),
        "from the future": await post_sendgrid(client, body, timestamp=stamp(6)),
        "tampered body": await post_sendgrid(
            client, body.replace(b"bounce", b"bounde", 1), signature=sign_sendgrid(body, now_ts)
        ),
        "timestamp changed after signing": await post_sendgrid(
            client,
            body,
            timestamp=str(int(now_ts) - 1),
            signature=sign_sendgrid(body, now_ts),
        ),
        "another key": await post_sendgrid(
            client, body, signature=sign_sendgrid(body, now_ts, other_key)
        ),
        "not base64": await post_sendgrid(client, body, signature="%%%"),
        "no signature": await post_sendgrid(
            client, body, headers={"X-Twilio-Email-Event-Webhook-Signature": ""}
        ),
        "no timestamp": await post_sendgrid(
            client, body, headers={"X-Twilio-Email-Event-Webhook-Timestamp": ""}
        ),
    }
    for name, response in attempts.items():
        assert response.status_code == 403, name
        assert response.text == "forbidden\n", name
    assert (await message_row(db, message_id)).state == "sent"
    assert await count(db, message_statuses) == 0
    assert await count(db, suppressions) == 0
    # Four minutes either way is still fine.
    assert (await post_sendgrid(client, body, timestamp=stamp(4))).status_code == 200
    assert (await post_sendgrid(client, body, timestamp=stamp(-4))).status_code == 200


async def test_a_signed_body_that_is_not_an_array_of_events_is_a_bad_request(client):
    for body in (b'{"event": "open"}', b"[1, 2]", b"not json"):
        response = await post_sendgrid(client, body)
        assert response.status_code == 400, body
        assert response.json()["type"] == "/problems/invalid-json"


async def test_bodies_over_a_megabyte_are_refused(client, db, brand_id):
    big = b"[" + b" " * (1024 * 1024) + b"]"
    assert (await post_sendgrid(client, big)).status_code == 413
    message_id = await insert_message(db, brand_id)
    params = {**twilio_params("delivered"), "Padding": "x" * (1024 * 1024)}
    assert (await post_twilio(client, message_id, params)).status_code == 413


# --- The pure mapping ------------------------------------------------------------------------


def test_states_only_move_forward():
    forward = ("queued>sent", "sending>delivered", "unknown>sent", "unknown>failed", "sent>failed")
    for move in forward:
        assert status.advances(*move.split(">")), move
    stays = ("sent>sent", "delivered>sent", "delivered>failed", "bounced>delivered")
    for move in (*stays, "suppressed>sent", "dropped>delivered"):
        assert not status.advances(*move.split(">")), move


def test_twilio_statuses_map_to_ours():
    expected = dict.fromkeys(("accepted", "scheduled", "queued", "sending", "sent"), "sent")
    expected |= {"delivered": "delivered", "read": "delivered", "undelivered": "undelivered"}
    expected |= {"failed": "failed", "canceled": "failed", "receiving": None}
    assert {name: status.interpret("twilio", name, {}).state for name in expected} == expected
