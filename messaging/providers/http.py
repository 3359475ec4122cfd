"""The providers' HTTP client: one aiohttp connection pool, and the at-most-once rule.

    http = HttpClient("SendGrid", timeout=15.0)
    answer = await http.request("POST", url, body, headers)   # any status: an Answer
    await http.aclose()

A send may go again only when it certainly never reached the provider, so `request` tracks
whether the request's bytes were handed to a socket at all, and maps a failure by that alone:

    never handed over (no connection, connect timeout, ...)  ProviderError(code="connect")
    handed over, no complete answer (timeout, reset, ...)     ProviderError(code="timeout",
                                                              unknown=True)

A keep-alive connection can be closed by the server while it waits in the pool (uvicorn drops
idle ones after 5 s). Two things keep a send from being lost in that race:

- idle connections are dropped after KEEPALIVE_SECONDS (2 s), below the keep-alive timeout of
  common servers (uvicorn, Node, Apache httpd: 5 s), so the client lets go of a connection first
  (behind a gateway with a shorter one, such as gunicorn's 2 s, pass a lower keepalive_seconds);
- just before the first byte of a request is written, the connection's socket is checked: a
  socket that reads on an idle connection holds the server's close or reset (see `_usable`),
  so the request is not written there and goes at once on another connection.

What remains is a close and a request crossing on the wire: the request was written, so it
stays `unknown`, as does any failure after the request was written.

The session is created on the first request: aiohttp binds it to the running event loop.
"""

from __future__ import annotations

import asyncio
import json
import select
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload

from messaging.providers.base import ProviderError

KEEPALIVE_SECONDS = 2.0
# Each attempt that finds its pooled connection closed drops it; a fresh one follows soon.
_ATTEMPTS_ON_CLOSED_CONNECTIONS = 3
# Turns of the event loop a readable socket gets to show what it holds (see _usable).
_TURNS_TO_SETTLE = 3
_FAILURES = (aiohttp.ClientError, OSError)  # TimeoutError is an OSError


@dataclass(frozen=True, slots=True)
class Answer:
    """A provider's complete answer: status, reason, headers (case-insensitive), body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def is_success(self) -> bool:
        """Tell whether the status is 2xx."""
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        """Return the body as text (UTF-8, as both providers answer)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """Parse the body as JSON; raise ValueError when it is not."""
        return json.loads(self.body)


class HttpClient:
    """Post requests over a pool of keep-alive connections; see the module docstring."""

    def __init__(
        self, provider: str, timeout: float, *, keepalive_seconds: float = KEEPALIVE_SECONDS
    ) -> None:
        self._provider = provider
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float | None = None,  # noqa: ASYNC109  (a per-request override)
    ) -> Answer:
        """Send one request and read its whole answer; raise ProviderError if none came."""
        session = self._session or self._open()
        per_request = self._timeout if timeout is None else aiohttp.ClientTimeout(total=timeout)
        for _ in range(_ATTEMPTS_ON_CLOSED_CONNECTIONS):
            sent = _Body(body)
            try:
                async with session.request(
                    method,
                    url,
                    data=sent,
                    headers=headers,
                    timeout=per_request,
                    allow_redirects=False,
                ) as response:
                    return Answer(
                        response.status,
                        response.reason or "",
                        response.headers,
                        await response.read(),
                    )
            except _FAILURES as exc:
                if sent.found_closed:
                    continue  # nothing was written: the next attempt takes another connection
                kind = type(exc).__name__
                if sent.handed_over:
                    detail = f"no answer from {self._provider} ({kind})"
                    raise ProviderError(detail, code="timeout", unknown=True) from exc
                detail = f"could not reach {self._provider} ({kind})"
                raise ProviderError(detail, code="connect") from exc
        raise ProviderError(
            f"could not reach {self._provider} (its connections kept closing)", code="connect"
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(keepalive_timeout=self._keepalive_seconds)
        # No cookies: neither API sets any we need, and a jar costs time on every answer.
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self._session


class _Body(BytesPayload):
    """A request body that checks its connection right before the request's first byte.

    aiohttp holds the request line and headers back until the body's first write, so nothing
    of the request has left when `write_with_length` starts.
    """

    def __init__(self, value: bytes) -> None:
        super().__init__(value)
        self.handed_over = False  # some of the request reached the socket
        self.found_closed = False  # the connection was closed, so none of it did

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        if not await _usable(writer):
            self.found_closed = True
            raise ConnectionResetError("the server closed the connection before the request")
        # From here on the bytes are the transport's: whatever happens next, they may arrive.
        self.handed_over = True
        await super().write_with_length(writer, content_length)


async def _usable(writer: AbstractStreamWriter) -> bool:
    """Tell whether the connection is still open, as sure as can be before writing to it.

    An idle HTTP connection has nothing to read: a socket that reads holds the server's FIN or
    reset, or, over TLS, maybe a record such as a session ticket. The event loop is given a
    turn or two to take it in (closing the transport if it was the end), then the socket is
    looked at again; a return of True is never followed by a turn of the loop before the write.
    """
    for _ in range(_TURNS_TO_SETTLE):
        transport = writer.transport
        if transport is None or transport.is_closing():
            return False
        if not _reads(transport):
            return True
        await asyncio.sleep(0)
    return False  # still something unasked-for to read: not a connection to send on


def _reads(transport: asyncio.BaseTransport) -> bool:
    """Tell whether the transport's socket has something to read (or an error)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)  # POLLHUP and POLLERR come regardless
    return bool(poller.poll(0))
