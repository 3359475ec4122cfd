"""Providers' keep-alive connections against a raw HTTP/1.1 server that closes them on cue.

The race this pins: the client picks a pooled connection just as the server closes it after
its idle timeout. The request never reaches the server's application, so the send must go again
(here: on a fresh connection at once), never end `unknown`. A connection that drops after the
request did arrive stays `unknown`: sending again could deliver the message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

import pytest
import uvicorn

from messaging.providers import Accepted, Email, ProviderError, Sms
from messaging.providers.http import KEEPALIVE_SECONDS
from messaging.providers.sendgrid import SendGridProvider
from messaging.providers.twilio import TwilioProvider
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's TCP_INFO"),
]

_TCP_FIN_WAIT2 = 5  # linux/tcp_states.h


@dataclass(frozen=True)
class Received:
    connection: int  # 1 for the server's first accepted connection, and so on
    body: bytes


class RawServer:
    """HTTP/1.1 on 127.0.0.1 over plain sockets: answers 201 and keeps each connection open.

    park_next()   after answering the next request, leave its connection idle and unread
    close_idle()  close each parked connection as an idle timeout would: only if no request has
                  arrived on it since (else serve it), and not before the client's kernel has
                  acknowledged the FIN
    drop_next()   read the next request whole, then close its connection without an answer
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._parked: list[tuple[int, socket.socket, threading.Event]] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._park = self._drop = False
        self.received: list[Received] = []
        self.closed_idle = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def park_next(self) -> None:
        self._park = True

    def drop_next(self) -> None:
        self._drop = True

    def close_idle(self) -> None:
        with self._lock:
            parked, self._parked = self._parked, []
        for number, conn, answered in parked:
            if not answered.wait(5):
                raise AssertionError("the parked connection's answer never went out")
            try:
                conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                _close_acknowledged(conn)
                self.closed_idle += 1
            else:
                self._spawn(self._serve, number, conn)  # a request came first: not idle

    def __enter__(self) -> RawServer:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        for conn in self._open:
            conn.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        number = 0
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            number += 1
            with self._lock:
                self._open.append(conn)
            self._spawn(self._serve, number, conn)

    def _serve(self, number: int, conn: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while True:
                request, buffer = _read_request(conn, buffer)
                if request is None:
                    return
                self.received.append(Received(number, request))
                if self._drop:
                    self._drop = False
                    conn.close()  # all of it read: a FIN, no answer
                    return
                sid = f"SM{len(self.received):032x}"
                body = json.dumps({"sid": sid, "status": "queued"}).encode()
                answer = (
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    + f"X-Message-Id: {sid}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                if not self._park:
                    conn.sendall(answer)
                    continue
                # Parked before the answer goes out, so the client cannot get ahead of it.
                self._park = False
                answered = threading.Event()
                with self._lock:
                    self._parked.append((number, conn, answered))
                conn.sendall(answer)
                answered.set()
                return


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
    """Read one request; return its body (None at EOF) and what followed it."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return rest[:length], rest[length:]


def _close_acknowledged(conn: socket.socket) -> None:
    """Send a FIN, wait until the peer's kernel acknowledges it, then close the socket."""
    conn.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + 5
    while conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _TCP_FIN_WAIT2:
        if time.monotonic() > deadline:
            raise AssertionError("the client never acknowledged the FIN")
        time.sleep(0.001)  # poll
    conn.close()  # closed: a request arriving now is refused with a reset, never read


Send = Callable[[int], Awaitable[Accepted]]


@contextlib.asynccontextmanager
async def provider_at(
    name: str, url: str, keepalive_seconds: float = KEEPALIVE_SECONDS
) -> AsyncIterator[Send]:
    """Yield a function that sends message `n` through the named provider to `url`."""
    if name == "twilio":
        twilio = TwilioProvider(
            ACCOUNT_SID, AUTH_TOKEN, url, 5.0, "+15557650000", keepalive_seconds=keepalive_seconds
        )
        async with contextlib.aclosing(twilio):
            yield lambda n: twilio.send_sms(
                Sms(n, "+15551230001", f"Order {n}", f"https://t.example/hooks/twilio/status/{n}")
            )
    else:
        sendgrid = SendGridProvider("key", url, 5.0, keepalive_seconds=keepalive_seconds)
        async with contextlib.aclosing(sendgrid):
            yield lambda n: sendgrid.send_email(
                Email(n, "a@example.net", "n@shop.example", "Shop", f"Order {n}", "Hi", "")
            )


@pytest.fixture
def server() -> Iterator[RawServer]:
    with RawServer() as raw:
        yield raw


def ids(server: RawServer) -> list[tuple[int, str]]:
    """Return (connection, our message id) for each request the server read."""
    found = []
    for entry in server.received:
        if entry.body.startswith(b"{"):  # SendGrid's JSON
            message_id = json.loads(entry.body)["custom_args"]["whereabouts_message_id"]
        else:  # Twilio's form: the id ends the StatusCallback URL
            callback = parse_qs(entry.body.decode())["StatusCallback"][0]
            message_id = callback.rsplit("/", 1)[1]
        found.append((entry.connection, message_id))
    return found


PROVIDERS = pytest.mark.parametrize("name", ["twilio", "sendgrid"])


@PROVIDERS
async def test_a_pooled_connection_closed_as_a_send_starts_goes_again_on_a_new_one(
    server: RawServer, name: str
) -> None:
    async with provider_at(name, server.url) as send:
        server.park_next()
        await send(1)  # its connection goes back to the pool, idle

        second = asyncio.create_task(send(2))  # picks that connection...
        asyncio.get_running_loop().call_soon(server.close_idle)  # ...as the server closes it
        accepted = await second

    assert server.closed_idle == 1  # the race happened: the client had the connection in hand
    assert accepted.provider_id == "SM" + f"{2:032x}"
    assert ids(server) == [(1, "1"), (2, "2")]  # once each; the second on a fresh connection


@PROVIDERS
async def test_a_drop_after_the_request_arrived_stays_unknown(server: RawServer, name: str) -> None:
    async with provider_at(name, server.url) as send:
        await send(1)
        server.drop_next()
        with pytest.raises(ProviderError) as caught:
            await send(2)  # on the reused connection, which the server reads and then closes

    error = caught.value
    assert (error.code, error.permanent, error.unknown) == ("timeout", False, True)
    assert ids(server) == [(1, "1"), (1, "2")]  # it did arrive, and was not sent again


@PROVIDERS
async def test_connections_idle_past_the_keepalive_are_not_reused(
    server: RawServer, name: str
) -> None:
    async with provider_at(name, server.url, keepalive_seconds=0.2) as send:
        await send(1)
        await send(2)
        await asyncio.sleep(0.3)  # poll: a deliberate idle period, past the keep-alive
        await send(3)

    assert ids(server) == [(1, "1"), (1, "2"), (2, "3")]


def test_the_keepalive_expires_before_uvicorns() -> None:
    # The fakes are uvicorn servers with its default keep-alive timeout.
    server_timeout = uvicorn.Config(app=object()).timeout_keep_alive

    assert server_timeout > KEEPALIVE_SECONDS
