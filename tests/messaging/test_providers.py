"""Providers against real local servers that speak the Twilio and SendGrid wire formats.

Each test asserts what the provider would see (the exact form or JSON received, the auth) or
what the dispatcher gets back (Accepted, or a ProviderError of the right kind).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sendgrid.helpers.mail import From, ReplyTo, To
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from app.settings import Settings
from messaging.providers import (
    Accepted,
    Attempt,
    Email,
    ProviderConfigError,
    ProviderError,
    Sighting,
    Sms,
    build_email_provider,
    build_sms_provider,
    parse_retry_after,
)
from messaging.providers import sendgrid as sendgrid_module
from messaging.providers import twilio as twilio_module
from messaging.providers.dev import DevInbox
from messaging.providers.sendgrid import SendGridProvider
from messaging.providers.twilio import TwilioProvider
from tests.fakes.sendgrid import UNAUTHORIZED, FakeSendGrid
from tests.fakes.server import Fault, ServerThread
from tests.fakes.twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilio,
    status_callback_params,
    status_callback_request,
    twilio_error,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_URL = "https://track.example.test"
SENDER = "+15557650000"
SERVICE = "MG" + "0a" * 16
SHOPPER_PHONE = "+15551230001"
SHOPPER_EMAIL = "robin.shopper@example.net"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def sms(message_id: int = 41, to: str = SHOPPER_PHONE, **fields: str) -> Sms:
    return Sms(
        message_id=message_id,
        to=to,
        body="Your order 1001: 1 item ships Nov 12-14. Reply 1 to keep waiting.",
        status_callback=f"{PUBLIC_URL}/hooks/twilio/status/{message_id}",
        **fields,
    )


def email(message_id: int = 52, **fields: object) -> Email:
    values: dict[str, object] = {
        "message_id": message_id,
        "to": SHOPPER_EMAIL,
        "from_email": "updates@acme.example",
        "from_name": "Acme Outdoor",
        "subject": "Your backordered tent ships around Nov 12",
        "text": "Hi Robin, your tent is on its way back into stock.",
        "html": "<p>Hi Robin, your tent is on its way back.</p>",
        "categories": ("whereabouts", "eta_changed"),
        "headers": {
            "List-Unsubscribe": "<https://track.example.test/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "reply_to": "help@acme.example",
    }
    values.update(fields)
    return Email(**values)  # type: ignore[arg-type]


def closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def answering(answer: Response) -> Iterator[tuple[str, list[str]]]:
    """Serve `answer` to every POST on 127.0.0.1; yield the URL and the paths asked for."""
    paths: list[str] = []

    async def endpoint(request: Request) -> Response:
        paths.append(request.url.path)
        return answer

    with ServerThread(
        Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])])
    ) as server:
        yield server.url, paths


def settings_from(**env: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": "sqlite:///unused.db", **env})


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


@pytest.fixture
async def twilio_provider(fake_twilio: FakeTwilio) -> AsyncIterator[TwilioProvider]:
    provider = twilio_at(fake_twilio, from_number=SENDER)
    yield provider
    await provider.aclose()


@pytest.fixture
async def sendgrid_provider(fake_sendgrid: FakeSendGrid) -> AsyncIterator[SendGridProvider]:
    provider = SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url, 5.0)
    yield provider
    await provider.aclose()


async def failure(send: Awaitable[object]) -> ProviderError:
    """Await a send (or a lookup) that must fail, and return its ProviderError."""
    with pytest.raises(ProviderError) as caught:
        await send
    return caught.value


def kind(error: ProviderError) -> tuple[str, bool, bool, float | None]:
    return (error.code, error.permanent, error.unknown, error.retry_after)


def twilio_at(
    fake: FakeTwilio,
    timeout: float = 5.0,
    from_number: str | None = None,
    messaging_service_sid: str | None = None,
) -> TwilioProvider:
    return TwilioProvider(
        fake.account_sid, fake.auth_token, fake.url, timeout, from_number, messaging_service_sid
    )


# Twilio: what goes out


async def test_twilio_posts_the_form_with_basic_auth_and_status_callback(
    fake_twilio: FakeTwilio, twilio_provider: TwilioProvider
) -> None:
    accepted = await twilio_provider.send_sms(sms(41))

    [request] = fake_twilio.received
    assert request.path == f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    assert request.form == {
        "To": SHOPPER_PHONE,
        "From": SENDER,
        "Body": "Your order 1001: 1 item ships Nov 12-14. Reply 1 to keep waiting.",
        "StatusCallback": f"{PUBLIC_URL}/hooks/twilio/status/41",
    }
    assert request.auth == (fake_twilio.account_sid, fake_twilio.auth_token)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.message_id == 41
    assert accepted == Accepted(request.sid or "", "sent")
    assert accepted.provider_id.startswith("SM")
    assert len(accepted.provider_id) == 34


_FORM_TEXT = st.one_of(st.text(st.characters(max_codepoint=127)), st.text())


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_FORM_TEXT, st.one_of(_FORM_TEXT, st.lists(_FORM_TEXT, max_size=3)), max_size=5)
)
def test_twilio_form_is_what_urlencode_makes(fields: dict[str, str | list[str]]) -> None:
    assert twilio_module._form(fields) == urlencode(fields, doseq=True)


OTHER_SERVICE = "MG" + "1b" * 16
OTHER_NUMBER = "+15557650999"


@pytest.mark.parametrize(
    ("defaults", "own", "expected"),
    [
        ((SENDER, SERVICE), (None, None), {"MessagingServiceSid": SERVICE}),
        ((SENDER, None), (None, OTHER_SERVICE), {"MessagingServiceSid": OTHER_SERVICE}),
        ((None, SERVICE), (OTHER_NUMBER, None), {"From": OTHER_NUMBER}),
        ((SENDER, None), (OTHER_NUMBER, OTHER_SERVICE), {"MessagingServiceSid": OTHER_SERVICE}),
    ],
    ids=["service-over-from", "own-service", "own-from-over-default-service", "own-service-wins"],
)
async def test_twilio_chooses_the_sender(
    fake_twilio: FakeTwilio,
    defaults: tuple[str | None, str | None],
    own: tuple[str | None, str | None],
    expected: dict[str, str],
) -> None:
    message = dataclasses.replace(sms(41), from_number=own[0], messaging_service_sid=own[1])
    async with contextlib.aclosing(twilio_at(fake_twilio, 5.0, *defaults)) as provider:
        await provider.send_sms(message)

    form = fake_twilio.received[0].form
    assert {key: form[key] for key in ("From", "MessagingServiceSid") if key in form} == expected


async def test_twilio_without_any_sender_sends_nothing(fake_twilio: FakeTwilio) -> None:
    async with contextlib.aclosing(twilio_at(fake_twilio)) as provider:
        error = await failure(provider.send_sms(sms()))

    assert kind(error) == ("twilio:no-sender", False, False, None)
    assert fake_twilio.received == []


async def test_twilio_concurrent_sends_each_get_their_own_outcome(
    fake_twilio: FakeTwilio, twilio_provider: TwilioProvider
) -> None:
    recipients = {n: "+15005550001" if n % 3 == 0 else f"+1555123{n:04d}" for n in range(30)}

    outcomes = await asyncio.gather(
        *(twilio_provider.send_sms(sms(n, to=to)) for n, to in recipients.items()),
        return_exceptions=True,
    )

    for n, outcome in enumerate(outcomes):
        if n % 3 == 0:
            assert isinstance(outcome, ProviderError)
            assert outcome.code == "twilio:21211"
        else:
            assert isinstance(outcome, Accepted)
        assert fake_twilio.count(n) == 1
    sids = {entry.sid for entry in fake_twilio.received if entry.sid}
    assert sids == {o.provider_id for o in outcomes if isinstance(o, Accepted)}


async def test_twilio_logs_neither_number_nor_body(
    fake_twilio: FakeTwilio, twilio_provider: TwilioProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_twilio.fail_next(twilio_error(21211), Fault.error(500))

    details = [(await failure(twilio_provider.send_sms(sms()))).detail for _ in range(2)]
    await twilio_provider.send_sms(sms())

    assert not [detail for detail in details if SHOPPER_PHONE in detail]
    assert caplog.records
    for record in caplog.records:
        assert SHOPPER_PHONE not in record.getMessage()
        assert "Reply 1" not in record.getMessage()


def test_status_callback_request_signs_like_twilio() -> None:
    params = status_callback_params("SM" + "2" * 32, "delivered", to=SHOPPER_PHONE)
    headers = status_callback_request(PUBLIC_URL, "/hooks/twilio/status/41", params, "secret")

    validator = RequestValidator("secret")
    url = f"{PUBLIC_URL}/hooks/twilio/status/41"
    signature = headers["X-Twilio-Signature"]
    assert validator.validate(url, params, signature)
    assert not validator.validate(url, {**params, "MessageStatus": "failed"}, signature)


# Twilio: how failures map


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(Fault.rate_limited(7), ("twilio:20429", False, False, 7.0), id="429"),
        pytest.param(Fault.error(500), ("twilio:20500", False, False, None), id="500"),
        pytest.param(Fault.error(503), ("twilio:20503", False, False, None), id="503"),
        pytest.param(Fault.error(408), ("twilio:408", False, False, None), id="408"),
        pytest.param(twilio_error(21211), ("twilio:21211", True, False, None), id="21211"),
        pytest.param(twilio_error(21610), ("twilio:21610", True, False, None), id="21610"),
        pytest.param(twilio_error(21614), ("twilio:21614", True, False, None), id="21614"),
        pytest.param(Fault.error(404, code=20404), ("twilio:20404", True, False, None), id="404"),
        pytest.param(Fault.error(403, code=20403), ("twilio:auth", False, False, None), id="403"),
        pytest.param(Fault.drop(), ("timeout", False, True, None), id="dropped"),
    ],
)
async def test_twilio_maps_each_failure(
    fake_twilio: FakeTwilio,
    twilio_provider: TwilioProvider,
    fault: Fault,
    expected: tuple[str, bool, bool, float | None],
) -> None:
    fake_twilio.fail_next(fault)

    error = await failure(twilio_provider.send_sms(sms(41)))

    assert kind(error) == expected
    assert error.detail
    assert SHOPPER_PHONE not in error.detail
    # Each fault is spent once: the retry goes through.
    await twilio_provider.send_sms(sms(41))
    assert (fake_twilio.count(41), fake_twilio.count(41, accepted_only=True)) == (
        2,
        2 if fault.kind == "drop" else 1,
    )


@pytest.mark.parametrize(
    ("recipient", "code"),
    [("+15005550001", 21211), ("+15005550004", 21610), ("+15005550009", 21614), ("5550100", 21211)],
)
async def test_twilio_refused_recipients_are_permanent_and_unnamed(
    twilio_provider: TwilioProvider, recipient: str, code: int
) -> None:
    error = await failure(twilio_provider.send_sms(sms(to=recipient)))

    assert kind(error) == (f"twilio:{code}", True, False, None)
    assert recipient not in error.detail


async def test_twilio_bad_credentials_are_retried_as_auth(fake_twilio: FakeTwilio) -> None:
    provider = TwilioProvider(fake_twilio.account_sid, "wrong-token", fake_twilio.url, 5.0, SENDER)
    async with contextlib.aclosing(provider):
        error = await failure(provider.send_sms(sms()))

    assert kind(error) == ("twilio:auth", False, False, None)
    assert fake_twilio.received[0].status == 401


async def test_twilio_connection_refused_is_retried() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with contextlib.aclosing(TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, url, 2.0)) as provider:
        error = await failure(provider.send_sms(sms(from_number=SENDER)))

    assert kind(error) == ("connect", False, False, None)


async def test_twilio_hang_past_the_timeout_is_unknown(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(Fault.hang(10))
    started = time.monotonic()
    async with contextlib.aclosing(twilio_at(fake_twilio, 0.3, from_number=SENDER)) as provider:
        error = await failure(provider.send_sms(sms(41)))

    assert time.monotonic() - started < 5
    assert kind(error) == ("timeout", False, True, None)
    # The send did arrive: exactly the case where sending again would duplicate it.
    assert fake_twilio.count(41, accepted_only=True) == 1


async def test_twilio_unreadable_success_is_unknown() -> None:
    with answering(Response("<html>ok</html>", 201, media_type="text/html")) as (url, _):
        provider = TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, url, 2.0, SENDER)
        async with contextlib.aclosing(provider):
            error = await failure(provider.send_sms(sms()))

    assert kind(error) == ("bad_response", False, True, None)


async def test_twilio_base_url_keeps_a_path_prefix() -> None:
    answer = JSONResponse({"sid": "SM" + "1" * 32, "status": "queued"}, 201)
    with answering(answer) as (url, paths):
        provider = TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, f"{url}/twilio/", 2.0, SENDER)
        async with contextlib.aclosing(provider):
            accepted = await provider.send_sms(sms())

    assert accepted.provider_id == "SM" + "1" * 32
    assert paths == [f"/twilio/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"]


# SendGrid: what goes out


async def test_sendgrid_posts_the_v3_body_with_bearer_key(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    accepted = await sendgrid_provider.send_email(email(52))

    [request] = fake_sendgrid.received
    assert request.path == "/v3/mail/send"
    assert request.headers["authorization"] == f"Bearer {fake_sendgrid.api_key}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "from": {"email": "updates@acme.example", "name": "Acme Outdoor"},
        "subject": "Your backordered tent ships around Nov 12",
        "personalizations": [{"to": [{"email": SHOPPER_EMAIL}]}],
        "content": [
            {"type": "text/plain", "value": "Hi Robin, your tent is on its way back into stock."},
            {"type": "text/html", "value": "<p>Hi Robin, your tent is on its way back.</p>"},
        ],
        "categories": ["whereabouts", "eta_changed"],
        "custom_args": {"whereabouts_message_id": "52"},
        "headers": {
            "List-Unsubscribe": "<https://track.example.test/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "reply_to": {"email": "help@acme.example"},
    }
    # Compact JSON, UTF-8 as is: the bytes SendGrid has always been sent.
    assert request.raw == json.dumps(request.body, ensure_ascii=False, separators=(",", ":"))
    assert accepted == Accepted(request.x_message_id or "", "sent")
    assert fake_sendgrid.count(52) == 1


@settings(max_examples=300, deadline=None)
@given(
    address=st.one_of(
        st.from_regex(r"[A-Za-z0-9_%+.-]{1,12}@[A-Za-z0-9.-]{1,12}", fullmatch=True),
        st.text("aZ09_%+-.@ <>\"'(),;:[]\\\tü", max_size=24),
    ),
    name=st.sampled_from(["", "Acme Outdoor", "robin@example.net"]),
)
def test_sendgrid_addresses_are_the_ones_its_helper_parses(address: str, name: str) -> None:
    """A plain address skips the helper's parse, and goes out just as the parse makes it."""
    for kind in (From, To, ReplyTo):
        made = sendgrid_module._address(kind, address, name)
        assert made.get() == kind(address, name or None).get()


async def test_sendgrid_leaves_out_what_the_email_does_not_have(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    await sendgrid_provider.send_email(
        email(53, from_name="", categories=(), headers={}, reply_to=None)
    )

    body = fake_sendgrid.received[0].body
    assert body["from"] == {"email": "updates@acme.example"}
    assert not {"categories", "headers", "reply_to"} & set(body)
    assert body["custom_args"] == {"whereabouts_message_id": "53"}


async def test_sendgrid_puts_nothing_personal_in_categories_or_custom_args(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    await sendgrid_provider.send_email(email(54))

    body = fake_sendgrid.received[0].body
    tagged = " ".join([*body["categories"], *body["custom_args"], *body["custom_args"].values()])
    for personal in ("robin", "Robin", "@", "acme", "Acme", "tent"):
        assert personal not in tagged
    assert body["custom_args"] == {"whereabouts_message_id": "54"}


@pytest.mark.parametrize(
    "categories",
    [(SHOPPER_EMAIL,), ("whereabouts", "Robin Shopper"), tuple(f"c{n}" for n in range(11))],
)
async def test_sendgrid_refuses_categories_that_could_carry_personal_data(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider, categories: tuple[str, ...]
) -> None:
    error = await failure(sendgrid_provider.send_email(email(categories=categories)))

    assert kind(error) == ("sendgrid:categories", True, False, None)
    assert fake_sendgrid.received == []


async def test_sendgrid_without_message_id_header_uses_ours() -> None:
    with answering(Response(status_code=202)) as (url, _):
        provider = SendGridProvider("key", url, 2.0)
        async with contextlib.aclosing(provider):
            accepted = await provider.send_email(email(55))

    assert accepted == Accepted("sendgrid-55", "sent")


# SendGrid: how failures map


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(Fault.rate_limited(9), ("sendgrid:429", False, False, 9.0), id="429"),
        pytest.param(Fault.error(500), ("sendgrid:500", False, False, None), id="500"),
        pytest.param(Fault.error(502), ("sendgrid:502", False, False, None), id="502"),
        pytest.param(Fault.error(503), ("sendgrid:503", False, False, None), id="503"),
        pytest.param(Fault.error(408), ("sendgrid:408", False, False, None), id="408"),
        pytest.param(Fault.error(400), ("sendgrid:400", True, False, None), id="400"),
        pytest.param(Fault.error(413), ("sendgrid:413", True, False, None), id="413"),
        pytest.param(Fault.error(404), ("sendgrid:404", True, False, None), id="404"),
        pytest.param(Fault.error(403), ("sendgrid:auth", False, False, None), id="403"),
        pytest.param(Fault.drop(), ("timeout", False, True, None), id="dropped"),
    ],
)
async def test_sendgrid_maps_each_failure(
    fake_sendgrid: FakeSendGrid,
    sendgrid_provider: SendGridProvider,
    fault: Fault,
    expected: tuple[str, bool, bool, float | None],
) -> None:
    fake_sendgrid.fail_next(fault)

    error = await failure(sendgrid_provider.send_email(email(56)))

    assert kind(error) == expected
    assert error.detail
    await sendgrid_provider.send_email(email(56))
    assert fake_sendgrid.count(56) == 2


async def test_sendgrid_429_falls_back_to_the_rate_limit_reset(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    reset = int(time.time()) + 30
    fake_sendgrid.fail_next(Fault.error(429, headers={"X-RateLimit-Reset": str(reset)}))

    error = await failure(sendgrid_provider.send_email(email()))

    assert error.retry_after is not None
    assert 25 <= error.retry_after <= 30


async def test_sendgrid_detail_is_the_first_error_without_addresses(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    fake_sendgrid.fail_next(Fault.error(400, message=f"Invalid address: {SHOPPER_EMAIL}."))

    error = await failure(sendgrid_provider.send_email(email()))

    assert error.detail == "Invalid address: [address]."


async def test_sendgrid_rejected_shape_is_permanent(sendgrid_provider: SendGridProvider) -> None:
    error = await failure(sendgrid_provider.send_email(email(text="", html="")))

    assert kind(error) == ("sendgrid:400", True, False, None)
    assert error.detail == "At least one content item is required."


async def test_sendgrid_bad_key_is_retried_as_auth(fake_sendgrid: FakeSendGrid) -> None:
    provider = SendGridProvider("SG.wrong.key", fake_sendgrid.url, 5.0)
    async with contextlib.aclosing(provider):
        error = await failure(provider.send_email(email()))

    assert kind(error) == ("sendgrid:auth", False, False, None)
    assert error.detail == UNAUTHORIZED


async def test_sendgrid_connection_refused_is_retried() -> None:
    provider = SendGridProvider("key", f"http://127.0.0.1:{closed_port()}", 2.0)
    async with contextlib.aclosing(provider):
        error = await failure(provider.send_email(email()))

    assert kind(error) == ("connect", False, False, None)


async def test_sendgrid_hang_past_the_timeout_is_unknown(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.fail_next(Fault.hang(10))
    provider = SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url, 0.3)
    async with contextlib.aclosing(provider):
        error = await failure(provider.send_email(email(57)))

    assert kind(error) == ("timeout", False, True, None)
    assert fake_sendgrid.count(57, accepted_only=True) == 1


async def test_fake_sendgrid_checks_the_shape(fake_sendgrid: FakeSendGrid) -> None:
    body = {
        "from": {"email": "updates@acme.example"},
        "subject": "Hi",
        "personalizations": [{"to": [{"email": SHOPPER_EMAIL}]}],
        "content": [
            {"type": "text/html", "value": "<p>x</p>"},
            {"type": "text/plain", "value": "x"},
        ],
        "custom_args": {"whereabouts_message_id": 57},
    }
    headers = {"Authorization": f"Bearer {fake_sendgrid.api_key}"}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{fake_sendgrid.url}/v3/mail/send", json=body, headers=headers)

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["content.0.type", "custom_args"]


# Dev inbox and the registry


async def test_dev_inbox_delivers_at_once() -> None:
    inbox = DevInbox()

    assert await inbox.send_email(email(58)) == Accepted("dev-58", "delivered")
    assert await inbox.send_sms(sms(59)) == Accepted("dev-59", "delivered")
    await inbox.aclose()


async def test_registry_auto_without_credentials_is_the_dev_inbox() -> None:
    settings = settings_from()

    assert isinstance(build_email_provider(settings), DevInbox)
    assert isinstance(build_sms_provider(settings), DevInbox)


async def test_registry_auto_with_credentials_sends_through_the_providers(
    fake_twilio: FakeTwilio, fake_sendgrid: FakeSendGrid
) -> None:
    settings = settings_from(
        SENDGRID_API_KEY=fake_sendgrid.api_key,
        SENDGRID_BASE_URL=fake_sendgrid.url,
        TWILIO_ACCOUNT_SID=fake_twilio.account_sid,
        TWILIO_AUTH_TOKEN=fake_twilio.auth_token,
        TWILIO_BASE_URL=fake_twilio.url,
        TWILIO_FROM=SENDER,
    )
    mailer, texter = build_email_provider(settings), build_sms_provider(settings)
    try:
        assert (mailer.name, texter.name) == ("sendgrid", "twilio")
        await mailer.send_email(email(60))
        await texter.send_sms(sms(61))
    finally:
        await mailer.aclose()
        await texter.aclose()

    assert fake_sendgrid.count(60, accepted_only=True) == 1
    assert fake_twilio.received[0].form["From"] == SENDER


async def test_registry_explicit_dev_ignores_credentials() -> None:
    settings = settings_from(
        EMAIL_PROVIDER="dev", SMS_PROVIDER="dev", SENDGRID_API_KEY="k", TWILIO_ACCOUNT_SID="AC1"
    )

    assert isinstance(build_email_provider(settings), DevInbox)
    assert isinstance(build_sms_provider(settings), DevInbox)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"EMAIL_PROVIDER": "sendgrid"}, "SENDGRID_API_KEY"),
        ({"SMS_PROVIDER": "twilio"}, "TWILIO_ACCOUNT_SID"),
        ({"SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": "AC1"}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "AC1"}, "TWILIO_AUTH_TOKEN"),
    ],
)
def test_registry_names_the_missing_credential(env: dict[str, str], missing: str) -> None:
    settings = settings_from(**env)
    build = build_email_provider if "SENDGRID" in missing else build_sms_provider

    with pytest.raises(ProviderConfigError, match=missing):
        build(settings)


def test_registry_rejects_an_unknown_name() -> None:
    settings = dataclasses.replace(settings_from(), email_provider="mailgun")

    with pytest.raises(ProviderConfigError, match="EMAIL_PROVIDER: no provider named 'mailgun'"):
        build_email_provider(settings)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_reads_an_http_date() -> None:
    seconds = parse_retry_after(
        time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    )

    assert seconds is not None
    assert 55 <= seconds <= 60


# A fake run on its own, as a subprocess worker test would


async def test_fake_twilio_runs_standalone_and_takes_faults_over_http() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.twilio",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 15)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url) as http:
            queued = await http.post("/_fake/faults", json={"kind": "error", "status": 503})
            assert queued.json() == {"queued": 1}
            provider = TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, url, 5.0)
            try:
                error = await failure(provider.send_sms(sms(62, from_number=SENDER)))
                accepted = await provider.send_sms(sms(62, from_number=SENDER))
            finally:
                await provider.aclose()
            received = (await http.get("/_fake/received")).json()
        assert error.code == "twilio:20503"
        assert [(r["message_id"], r["status"], r["sid"]) for r in received] == [
            (62, 503, None),
            (62, 201, accepted.provider_id),
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0


# Lookups: what the provider holds of a send whose answer was lost

BODY = "Your order 1001: 1 item ships Nov 12-14. Reply 1 to keep waiting."


def attempt(message_id: int = 41, to: str = SHOPPER_PHONE, **fields: object) -> Attempt:
    """An attempt made a minute ago at the latest."""
    now = dt.datetime.now(dt.UTC)
    values: dict[str, object] = {
        "message_id": message_id,
        "to": to,
        "since": now - dt.timedelta(minutes=1),
        "until": now + dt.timedelta(minutes=1),
        "body": BODY,
    }
    values.update(fields)
    return Attempt(**values)  # type: ignore[arg-type]


async def test_twilio_finds_only_the_message_that_fits(
    fake_twilio: FakeTwilio, twilio_provider: TwilioProvider
) -> None:
    ours = await twilio_provider.send_sms(sms(41))
    await twilio_provider.send_sms(dataclasses.replace(sms(42), body="Another text."))
    await twilio_provider.send_sms(sms(43, to="+15551230099"))
    await twilio_provider.send_sms(sms(44, from_number=OTHER_NUMBER))
    fake_twilio.set_status(ours.provider_id, "delivered")

    found = await twilio_provider.find_sms(attempt(41))

    # The other text to the number from our sender in the attempt's time is listed too, as
    # not exact: it may be ours with its words rewritten by Twilio.
    exact = [s for s in found if s.exact]
    assert [(s.provider_id, s.status) for s in exact] == [(ours.provider_id, "delivered")]
    assert [s.exact for s in found].count(False) == 1
    (near,) = [s for s in found if not s.exact]
    assert near.provider_id != ours.provider_id
    found = exact
    assert found[0].at is not None
    assert abs(found[0].at - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
    (lookup,) = fake_twilio.lookups
    assert lookup.path == f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    assert lookup.query == {"To": SHOPPER_PHONE, "PageSize": "100"}


async def test_twilio_finds_nothing_outside_the_attempts_time(
    twilio_provider: TwilioProvider,
) -> None:
    await twilio_provider.send_sms(sms(41))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)

    assert await twilio_provider.find_sms(attempt(41, since=later, until=None)) == []
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    assert await twilio_provider.find_sms(attempt(41, until=earlier)) == []


async def test_twilio_matches_a_messaging_service_send_on_its_service(
    fake_twilio: FakeTwilio,
) -> None:
    async with contextlib.aclosing(twilio_at(fake_twilio, messaging_service_sid=SERVICE)) as p:
        accepted = await p.send_sms(sms(41))
        found = await p.find_sms(attempt(41))
        other = await p.find_sms(attempt(41, messaging_service_sid=OTHER_SERVICE))

    assert found == [Sighting(accepted.provider_id, "accepted", found[0].at)]
    assert other == []


async def test_twilio_reads_every_page_oldest_match_first(
    fake_twilio: FakeTwilio, twilio_provider: TwilioProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(twilio_module, "_LOOKUP_PAGE", 2)
    sids = [(await twilio_provider.send_sms(sms(41))).provider_id for _ in range(5)]
    for sid in sids[:3]:
        fake_twilio.set_status(sid, "sent")

    found = await twilio_provider.find_sms(attempt(41))

    assert sorted(s.provider_id for s in found) == sorted(sids)
    assert [s.at for s in found] == sorted(s.at for s in found if s.at)
    pages = [lookup.query for lookup in fake_twilio.lookups]
    assert len(pages) == 3
    assert pages[0] == {"To": SHOPPER_PHONE, "PageSize": "2"}
    assert [page.get("Page") for page in pages[1:]] == ["1", "2"]
    assert all(page["PageToken"].startswith("PASM") for page in pages[1:])
    assert all(page["To"] == SHOPPER_PHONE for page in pages)


async def test_twilio_cannot_tell_past_its_lookup_limit(
    twilio_provider: TwilioProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(twilio_module, "LOOKUP_LIMIT", 3)
    for n in range(3):
        await twilio_provider.send_sms(dataclasses.replace(sms(50 + n), body=f"Text {n}"))

    error = await failure(twilio_provider.find_sms(attempt(41)))

    assert kind(error) == ("twilio:too-many", True, False, None)


async def test_twilio_lookup_failures_are_provider_errors(
    fake_twilio: FakeTwilio, twilio_provider: TwilioProvider
) -> None:
    fake_twilio.fail_next_lookup(Fault.error(500), Fault.rate_limited(7))
    assert kind(await failure(twilio_provider.find_sms(attempt()))) == (
        "twilio:20500",
        False,
        False,
        None,
    )
    assert kind(await failure(twilio_provider.find_sms(attempt()))) == (
        "twilio:20429",
        False,
        False,
        7.0,
    )
    wrong = TwilioProvider(ACCOUNT_SID, "wrong", fake_twilio.url, 5.0, SENDER)
    async with contextlib.aclosing(wrong):
        assert (await failure(wrong.find_sms(attempt()))).code == "twilio:auth"
    assert [lookup.status for lookup in fake_twilio.lookups] == [500, 429, 401]


async def test_fake_twilio_lists_in_twilios_wire_format(
    fake_twilio: FakeTwilio, twilio_provider: TwilioProvider
) -> None:
    first = await twilio_provider.send_sms(sms(41))
    second = await twilio_provider.send_sms(sms(42))
    fake_twilio.set_status(first.provider_id, "delivered")
    path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    today = dt.datetime.now(dt.UTC).date().isoformat()
    async with httpx.AsyncClient(base_url=fake_twilio.url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        page = (await http.get(path, params={"To": SHOPPER_PHONE, "PageSize": 1})).json()
        dated = (await http.get(path, params={"DateSent>": today})).json()
        anonymous = await http.get(path, auth=None)

    assert set(page) == {
        "end",
        "first_page_uri",
        "messages",
        "next_page_uri",
        "page",
        "page_size",
        "previous_page_uri",
        "start",
        "uri",
    }
    # Not sent yet (no date_sent) comes first; a date filter leaves it out.
    assert [m["sid"] for m in page["messages"]] == [second.provider_id]
    assert page["messages"][0]["date_sent"] is None
    assert page["next_page_uri"].startswith(f"{path}?To=%2B15551230001&PageSize=1&Page=1")
    assert page["next_page_uri"].endswith(f"PageToken=PA{second.provider_id}")
    assert (page["page"], page["page_size"], page["previous_page_uri"]) == (0, 1, None)
    assert [m["sid"] for m in dated["messages"]] == [first.provider_id]
    assert dated["messages"][0]["status"] == "delivered"
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == 20003


async def test_sendgrid_finds_the_mail_by_our_id_and_address(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    accepted = await sendgrid_provider.send_email(email(52))
    await sendgrid_provider.send_email(email(53))
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)

    found = await sendgrid_provider.find_email(Attempt(52, SHOPPER_EMAIL.upper(), since))
    elsewhere = await sendgrid_provider.find_email(Attempt(52, "someone@example.net", since))

    assert [(s.provider_id, s.status) for s in found] == [(accepted.provider_id, "processed")]
    assert elsewhere == []
    assert fake_sendgrid.lookups[0].query == {
        "query": "unique_args['whereabouts_message_id']=\"52\"",
        "limit": "10",
    }
    assert fake_sendgrid.activity[0]["msg_id"].startswith(accepted.provider_id + ".")


async def test_sendgrid_without_the_activity_add_on_cannot_look_up(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    fake_sendgrid.activity_available = False
    error = await failure(sendgrid_provider.find_email(Attempt(52, SHOPPER_EMAIL, START)))
    assert kind(error) == ("sendgrid:no-activity", True, False, None)
    assert error.detail == "the Email Activity API is not available (403: access forbidden)"

    # Free accounts have been answered 400 "authorization required".
    fake_sendgrid.activity_available = True
    fake_sendgrid.fail_next_lookup(Fault.error(400, message="authorization required"))
    error = await failure(sendgrid_provider.find_email(Attempt(52, SHOPPER_EMAIL, START)))
    assert kind(error) == ("sendgrid:no-activity", True, False, None)


async def test_sendgrid_lookup_failures_that_pass_are_not_permanent(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    fake_sendgrid.fail_next_lookup(Fault.error(500), Fault.rate_limited(3))
    first = await failure(sendgrid_provider.find_email(Attempt(52, SHOPPER_EMAIL, START)))
    second = await failure(sendgrid_provider.find_email(Attempt(52, SHOPPER_EMAIL, START)))

    assert kind(first) == ("sendgrid:500", False, False, None)
    assert kind(second) == ("sendgrid:429", False, False, 3.0)


async def test_fake_sendgrid_answers_activity_queries_like_sendgrid(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    accepted = await sendgrid_provider.send_email(email(52))
    fake_sendgrid.set_status(accepted.provider_id, "delivered")
    key = {"Authorization": f"Bearer {fake_sendgrid.api_key}"}
    async with httpx.AsyncClient(base_url=fake_sendgrid.url) as http:
        found = await http.get(
            "/v3/messages",
            params={"query": f'to_email="{SHOPPER_EMAIL}" AND status="delivered"', "limit": 5},
            headers=key,
        )
        garbled = await http.get(
            "/v3/messages", params={"query": "to_email", "limit": 5}, headers=key
        )
        anonymous = await http.get("/v3/messages", params={"limit": 5})

    (item,) = found.json()["messages"]
    assert set(item) == {
        "from_email",
        "msg_id",
        "subject",
        "to_email",
        "status",
        "opens_count",
        "clicks_count",
        "last_event_time",
    }
    assert (item["to_email"], item["status"]) == (SHOPPER_EMAIL, "delivered")
    assert item["subject"] == "Your backordered tent ships around Nov 12"
    assert garbled.status_code == 400
    assert garbled.json()["errors"][0]["field"] == "query"
    assert anonymous.status_code == 401


async def test_dev_inbox_cannot_look_up() -> None:
    inbox = DevInbox()

    for lookup in (inbox.find_email(attempt()), inbox.find_sms(attempt())):
        assert kind(await failure(lookup)) == ("dev:no-lookup", True, False, None)


async def test_sendgrid_unreadable_address_is_permanent_and_nothing_leaves(
    fake_sendgrid: FakeSendGrid, sendgrid_provider: SendGridProvider
) -> None:
    error = await failure(sendgrid_provider.send_email(email(57, to="no-at-sign")))

    assert kind(error) == ("sendgrid:invalid", True, False, None)
    assert error.detail == "an address could not be read"
    assert fake_sendgrid.count(57) == 0
