"""Webhook signing, payloads, the public-address rule, and delivery to a real receiver.

The receiver listens on 127.0.0.1, so deliveries meant to reach it say `allow_private=True`
(WEBHOOK_ALLOW_PRIVATE, as in development); without it they are refused before any request.
The receiver checks signatures with its own code (hmac, base64, the Standard Webhooks rules),
as a brand's server would, instead of calling back into the module under test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messaging.providers.base import ProviderError
from messaging.safe_http import (
    blocked_host,
    is_public_address,
    literal_address,
    public_only_transport,
)
from messaging.webhooks import (
    deliver,
    new_secret,
    new_webhook_id,
    secrets_in_force,
    sign,
    webhook_payload,
    webhook_type,
)
from tests.fakes.dns import rebinding_dns
from tests.fakes.server import ServerThread

pytestmark = pytest.mark.anyio

TOLERANCE = 5 * 60
NOW = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)


def verify(secrets: list[str], headers: Any, body: bytes, now: float) -> bool:
    """Check a delivery the way a receiver following Standard Webhooks does."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE:
        return False
    signed = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    offered = []
    for entry in headers.get("webhook-signature", "").split():
        version, _, value = entry.partition(",")
        if version == "v1":
            offered.append(value)
    for secret in secrets:
        key = base64.b64decode(secret[len("whsec_") :])
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(expected, value) for value in offered):
            return True
    return False


@dataclass
class Receiver:
    """A brand's webhook endpoint: verifies, records and answers as told."""

    secrets: list[str]
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0
    received: list[tuple[dict[str, str], bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        verified = verify(self.secrets, request.headers, body, time.time())
        with self.lock:
            self.received.append((dict(request.headers), body, verified))
        deadline = time.monotonic() + self.hang
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.01)  # poll
        if not verified:
            return Response(status_code=401)
        return Response(status_code=self.status, headers=self.headers)

    async def elsewhere(self, request: Request) -> Response:
        with self.lock:
            self.received.append(({"redirected": "yes"}, b"", False))
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/hook", self.hook, methods=["POST"]),
                Route("/elsewhere", self.elsewhere, methods=["POST"]),
            ]
        )


SECRET = new_secret()
PREVIOUS = new_secret()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    target = Receiver([SECRET])
    with ServerThread(target.app()) as server:
        yield target, server.url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def content(kind: str = "choice.made") -> dict[str, Any]:
    body = json.dumps(
        webhook_payload(
            "choice_made", "1001", {"choice": 7, "line": "L1", "decision": "keep"}, NOW
        ),
        separators=(",", ":"),
    )
    return {"webhook_id": new_webhook_id(), "type": kind, "body": body}


# Signing ------------------------------------------------------------------------------------


def test_signature_matches_the_standard_webhooks_published_vector():
    header = sign(
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert header == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_each_secret_adds_a_signature_in_order():
    header = sign([SECRET, PREVIOUS], "msg_1", 1700000000, b"{}")
    first, second = header.split(" ")
    assert first == sign([SECRET], "msg_1", 1700000000, b"{}")
    assert second == sign([PREVIOUS], "msg_1", 1700000000, b"{}")
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": header,
    }
    assert verify([PREVIOUS], headers, b"{}", 1700000000)
    assert not verify([new_secret()], headers, b"{}", 1700000000)
    assert not verify([SECRET], headers, b"{ }", 1700000000)


def test_new_secrets_hold_32_random_bytes():
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_previous_secret_signs_only_until_the_overlap_ends():
    until = NOW + dt.timedelta(hours=24)
    assert secrets_in_force(SECRET, PREVIOUS, until, until - dt.timedelta(seconds=1)) == [
        SECRET,
        PREVIOUS,
    ]
    assert secrets_in_force(SECRET, PREVIOUS, until, until) == [SECRET]
    assert secrets_in_force(SECRET, None, None, NOW) == [SECRET]


# Payloads -----------------------------------------------------------------------------------


def test_payload_has_the_standard_shape_and_no_contact_details():
    data = {
        "choice": 3,
        "line": "L2",
        "decision": "refund",
        "via": "sms",
        "customer": {"email": "jane@example.com", "phone": "+14155550123"},
        "phone": "+14155550123",
        "lines": [{"line": "L2", "email": "jane@example.com"}],
    }
    payload = webhook_payload("choice_made", "1001", data, NOW)
    assert payload == {
        "type": "choice.made",
        "timestamp": "2026-11-20T09:30:00Z",
        "data": {
            "order": "1001",
            "choice": 3,
            "line": "L2",
            "decision": "refund",
            "via": "sms",
            "lines": [{"line": "L2"}],
        },
    }


def test_window_events_share_a_type_and_say_why():
    data = {"lines": [{"line": "L1", "sku": "S"}], "choice_deadline": "2026-12-01T00:00:00Z"}
    at_risk = webhook_payload("window_at_risk", "1001", data, NOW)
    expired = webhook_payload("window_expired", "1001", data, NOW)
    assert at_risk["type"] == expired["type"] == "order.window_at_risk"
    assert at_risk["data"]["reason"] == "at_risk"
    assert expired["data"]["reason"] == "expired"
    assert expired["data"]["lines"] == data["lines"]


def test_failed_message_payload_keeps_only_what_names_no_one():
    data = {
        "message": 42,
        "channel": "sms",
        "error_code": "21211",
        "error_detail": "The 'To' number +14155550123 is not valid",
        "address": "+14155550123",
        "triggers": ["eta_changed"],
    }
    payload = webhook_payload("message_failed", "1001", data, NOW)
    assert payload["data"] == {
        "order": "1001",
        "message": 42,
        "channel": "sms",
        "error_code": "21211",
        "triggers": ["eta_changed"],
    }
    # A failed webhook announced by webhook would feed on its own failures.
    assert webhook_type("message_failed", {"channel": "webhook"}) is None


def test_only_exception_statuses_make_a_shipment_webhook():
    for status in ("exception", "lost", "returned"):
        assert webhook_type("shipment_updated", {"status": status}) == "shipment.exception"
    assert webhook_type("checkpoint_added", {"status": "in_transit"}) is None
    assert webhook_type("stock_set", {"sku": "S"}) is None
    with pytest.raises(ValueError, match="not a webhook event"):
        webhook_payload("stock_set", None, {}, NOW)


# Delivery -----------------------------------------------------------------------------------


async def test_delivery_is_signed_and_verified_by_the_receiver(receiver, http):
    target, url = receiver
    sent = content()
    now_ts = int(time.time())
    accepted = await deliver(http, f"{url}/hook", sent, [SECRET], now_ts, allow_private=True)
    assert accepted.provider_id == sent["webhook_id"]
    [(headers, body, verified)] = target.received
    assert verified
    assert body == sent["body"].encode()
    assert headers["webhook-id"] == sent["webhook_id"]
    assert headers["webhook-timestamp"] == str(now_ts)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Whereabouts-Webhooks"


async def test_during_rotation_a_receiver_on_either_secret_accepts(receiver, http):
    target, url = receiver
    now_ts = int(time.time())
    for known in ([SECRET], [PREVIOUS]):
        target.secrets = known
        await deliver(
            http, f"{url}/hook", content(), [SECRET, PREVIOUS], now_ts, allow_private=True
        )
    assert [verified for _, _, verified in target.received] == [True, True]
    target.secrets = [PREVIOUS]
    with pytest.raises(ProviderError) as failure:
        await deliver(http, f"{url}/hook", content(), [SECRET], now_ts, allow_private=True)
    assert failure.value.code == "http:401"


async def test_a_stale_timestamp_is_refused_by_the_receiver(receiver, http):
    _, url = receiver
    with pytest.raises(ProviderError) as failure:
        await deliver(
            http, f"{url}/hook", content(), [SECRET], int(time.time()) - 600, allow_private=True
        )
    assert failure.value.code == "http:401"


async def test_server_error_is_retryable(receiver, http):
    target, url = receiver
    target.status = 500
    with pytest.raises(ProviderError) as failure:
        await deliver(
            http, f"{url}/hook", content(), [SECRET], int(time.time()), allow_private=True
        )
    error = failure.value
    assert (error.code, error.permanent, error.unknown) == ("http:500", False, False)
    assert "500" in error.detail


async def test_rate_limit_passes_retry_after_on(receiver, http):
    target, url = receiver
    target.status, target.headers = 429, {"Retry-After": "7"}
    with pytest.raises(ProviderError) as failure:
        await deliver(
            http, f"{url}/hook", content(), [SECRET], int(time.time()), allow_private=True
        )
    assert (failure.value.code, failure.value.retry_after) == ("http:429", 7.0)


async def test_redirects_are_not_followed(receiver, http):
    target, url = receiver
    target.status, target.headers = 307, {"Location": f"{url}/elsewhere"}
    with pytest.raises(ProviderError) as failure:
        await deliver(
            http, f"{url}/hook", content(), [SECRET], int(time.time()), allow_private=True
        )
    assert failure.value.code == "http:307"
    assert len(target.received) == 1
    assert "redirected" not in target.received[0][0]


async def test_a_slow_receiver_times_out(receiver, http):
    target, url = receiver
    target.hang = 5.0
    with pytest.raises(ProviderError) as failure:
        await deliver(
            http,
            f"{url}/hook",
            content(),
            [SECRET],
            int(time.time()),
            request_timeout=0.3,
            allow_private=True,
        )
    assert (failure.value.code, failure.value.permanent, failure.value.unknown) == (
        "timeout",
        False,
        False,
    )


async def test_a_closed_port_is_a_connect_error(http):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderError) as failure:
        await deliver(
            http, f"http://127.0.0.1:{port}/hook", content(), [SECRET], 0, allow_private=True
        )
    assert (failure.value.code, failure.value.permanent) == ("connect", False)


# Only public addresses ----------------------------------------------------------------------

NOT_PUBLIC = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",  # noqa: S104 - an address under test, not a bind
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "64:ff9b::808:808"]


@pytest.mark.parametrize("text", NOT_PUBLIC)
def test_non_public_addresses_are_told_apart(text):
    assert not is_public_address(ipaddress.ip_address(text))
    assert blocked_host(text) is not None


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_pass(text):
    assert is_public_address(ipaddress.ip_address(text))
    assert blocked_host(text) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("fe80::1%25eth0", "fe80::1"),
    ],
)
def test_every_spelling_of_an_address_is_read_as_one(host, address):
    assert literal_address(host) == ipaddress.ip_address(address)
    assert blocked_host(host) is not None


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "metadata.localhost"])
def test_localhost_names_are_this_machine(host):
    assert literal_address(host) is None
    assert blocked_host(host) is not None


@pytest.mark.parametrize("host", ["hooks.brand.example", "cafe.example", "1e100.net"])
def test_names_are_left_to_resolution(host):
    assert literal_address(host) is None
    assert blocked_host(host) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_loopback_target_is_refused_for_good_without_a_request(receiver, http, host):
    target, url = receiver
    port = url.rsplit(":", 1)[1]
    with pytest.raises(ProviderError) as failure:
        await deliver(http, f"http://{host}:{port}/hook", content(), [SECRET], int(time.time()))
    error = failure.value
    assert (error.code, error.permanent, error.unknown) == ("private_address", True, False)
    assert "public" in error.detail
    assert target.received == []


async def test_a_name_that_resolves_to_loopback_is_refused_after_resolution(
    receiver, http, monkeypatch
):
    # `localhost` by another name: what a brand's own DNS record pointing inside would do.
    target, url = receiver
    port = int(url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    asked: list[str] = []

    async def resolve(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    with pytest.raises(ProviderError) as failure:
        await deliver(
            http, f"http://hooks.brand.example:{port}/hook", content(), [SECRET], int(time.time())
        )
    assert failure.value.code == "private_address"
    assert failure.value.permanent
    # The brand learns that the name is refused, not what it resolved to.
    assert "127.0.0.1" not in failure.value.detail
    assert asked == ["hooks.brand.example"]
    assert target.received == []


@dataclass
class ByteRecorder:
    """What each connection to a bare TCP server sent first; it answers nothing, and closes."""

    received: list[bytes] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.received.append(await reader.read(65536))
        self.connected.set()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@asynccontextmanager
async def byte_recorder(host: str) -> AsyncIterator[tuple[ByteRecorder, int]]:
    """Listen on a free port of `host` and record what connections send."""
    recorder = ByteRecorder()
    server = await asyncio.start_server(recorder.handle, host, 0)
    async with server:
        yield recorder, server.sockets[0].getsockname()[1]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")


@pytest.mark.parametrize(
    ("scheme", "listen", "inside"),
    [
        ("http", "127.0.0.1", "127.0.0.1"),
        ("https", "127.0.0.1", "127.0.0.1"),
        pytest.param("http", "127.0.0.1", "::ffff:127.0.0.1", marks=needs_ipv6),
        pytest.param("http", "::1", "::1", marks=needs_ipv6),
    ],
)
async def test_a_name_rebound_inside_after_the_check_is_refused_before_a_byte_is_sent(
    http, monkeypatch, scheme, listen, inside
):
    # DNS rebinding: the check before the request hears a public address, the connection that
    # follows resolves again and hears one of this machine's.
    asked = rebinding_dns(monkeypatch, "hooks.brand.example", "93.184.216.34", inside)
    async with byte_recorder(listen) as (recorder, port):
        with pytest.raises(ProviderError) as failure:
            await deliver(
                http,
                f"{scheme}://hooks.brand.example:{port}/hook",
                content(),
                [SECRET],
                int(time.time()),
            )
        # The connection was made (to the rebound address) and closed with nothing sent on
        # it: no request, no TLS handshake.
        await asyncio.wait_for(recorder.connected.wait(), 5)
        assert recorder.received == [b""]
    assert asked == ["hooks.brand.example", "hooks.brand.example"]
    error = failure.value
    assert (error.code, error.permanent, error.unknown) == ("private_address", True, False)
    assert "hooks.brand.example" in error.detail
    assert inside not in error.detail


async def test_with_private_targets_allowed_a_name_rebound_inside_is_delivered(
    receiver, http, monkeypatch
):
    target, url = receiver
    rebinding_dns(monkeypatch, "hooks.brand.example", "127.0.0.1", "127.0.0.1")
    sent = content()
    accepted = await deliver(
        http,
        f"http://hooks.brand.example:{httpx.URL(url).port}/hook",
        sent,
        [SECRET],
        int(time.time()),
        allow_private=True,
    )
    assert accepted.provider_id == sent["webhook_id"]
    assert [verified for _, _, verified in target.received] == [True]


async def test_with_private_targets_allowed_a_localhost_name_is_delivered(receiver, http):
    target, url = receiver
    port = url.rsplit(":", 1)[1]
    sent = content()
    accepted = await deliver(
        http, f"http://localhost:{port}/hook", sent, [SECRET], int(time.time()), allow_private=True
    )
    assert accepted.provider_id == sent["webhook_id"]
    assert [verified for _, _, verified in target.received] == [True]


async def test_a_name_that_does_not_resolve_is_retried(http):
    with pytest.raises(ProviderError) as failure:
        await deliver(http, "https://nothing.invalid/hook", content(), [SECRET], 0)
    assert not failure.value.permanent
    assert failure.value.code in ("connect", "timeout")


@pytest.mark.parametrize("inside", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_the_public_only_transport_opens_no_connection_to_a_rebound_name(monkeypatch, inside):
    # What the dispatcher's webhook client does: the name is resolved and vetted as the
    # connection opens, so the inside address is never connected to (not even the handshake
    # that would tell an open port from a closed one).
    asked = rebinding_dns(monkeypatch, "hooks.brand.example", "93.184.216.34", inside)
    async with (
        byte_recorder(inside) as (recorder, port),
        httpx.AsyncClient(transport=public_only_transport(), trust_env=False) as client,
    ):
        with pytest.raises(ProviderError) as failure:
            await deliver(
                client,
                f"http://hooks.brand.example:{port}/hook",
                content(),
                [SECRET],
                int(time.time()),
            )
        await asyncio.sleep(0.2)  # poll: time for a connection to show, were one opened
        assert not recorder.connected.is_set()
        assert recorder.received == []
    assert asked == ["hooks.brand.example", "hooks.brand.example"]
    assert (failure.value.code, failure.value.permanent) == ("private_address", True)


async def test_the_public_only_transport_connects_to_the_address_it_vetted(receiver):
    # Loopback stands in for a public address here (the policy is a parameter); the request
    # goes to the vetted address and still names the brand's host.
    target, url = receiver
    port = httpx.URL(url).port
    assert port is not None
    lookups: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[Any]:
        lookups.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    transport = public_only_transport(
        resolve=resolve, permitted=lambda address: str(address) == "127.0.0.1"
    )
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        sent = content()
        accepted = await deliver(
            client,
            f"http://hooks.brand.example:{port}/hook",
            sent,
            [SECRET],
            int(time.time()),
            allow_private=True,  # the pre-check would refuse the name, resolving it for real
        )
    assert accepted.provider_id == sent["webhook_id"]
    ((headers, _, verified),) = target.received
    assert verified
    assert headers["host"] == f"hooks.brand.example:{port}"
    assert lookups == [("hooks.brand.example", port)]
