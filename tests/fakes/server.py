"""Real HTTP servers on 127.0.0.1 for tests: a uvicorn thread, and what the provider fakes share.

    with ServerThread(app) as server:
        httpx.get(f"{server.url}/health")

`FakeService` is the base of `FakeTwilio` and `FakeSendGrid`: it owns the server thread, a
clock (the time the fake stamps on what it takes), queues of scripted faults (`Fault`) for sends
and for lookups, the thread-safe list of sends received and the list of lookups answered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Self, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
R = TypeVar("R", bound="DataclassInstance")
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """Tell the real time, in UTC (the fakes' clock unless a test gives its own)."""
    return dt.datetime.now(dt.UTC)


class ServerThread:
    """Serve an ASGI app with uvicorn from a background thread, on a free port of 127.0.0.1."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        # log_config=None: leave the test process's logging alone; lifespan off: fakes need none.
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._host = host
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """Return the port the server is bound to."""
        if not self._port:
            raise RuntimeError("the server is not running")
        return self._port

    @property
    def url(self) -> str:
        """Return the server's origin, such as http://127.0.0.1:50123."""
        return f"http://{self._host}:{self.port}"

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        self._thread = threading.Thread(target=self._server.run, name="fake-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread exited before it started")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the server did not start in time")
            time.sleep(0.005)  # poll
        self._port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Ask the server to finish and wait for its thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                raise RuntimeError("the server thread did not stop")
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


FaultKind = Literal["error", "hang", "drop", "lose"]


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of a fake, applied to the next authenticated send (or lookup).

    error  answer `status` with the fake's own error body (`code`, `message`) and `headers`
    hang   hold the answer for `seconds` (or until the client gives up), then accept the send
    drop   accept the send, then close the connection halfway through the answer
    lose   take the request without accepting it, then close the connection halfway through
           the answer, as a proxy in front of the provider might: the client cannot tell it
           from `drop`, the provider has no message
    """

    kind: FaultKind
    status: int = 0
    code: int | None = None
    message: str | None = None
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(
        cls,
        status: int,
        *,
        code: int | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Answer with an HTTP error."""
        return cls("error", status=status, code=code, message=message, headers=headers or {})

    @classmethod
    def rate_limited(cls, retry_after: int = 1) -> Fault:
        """Answer 429 with a Retry-After header."""
        return cls.error(429, headers={"Retry-After": str(retry_after)})

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Hold the answer past a client's timeout."""
        return cls("hang", seconds=seconds)

    @classmethod
    def drop(cls) -> Fault:
        """Accept, then drop the connection before the answer is complete."""
        return cls("drop")

    @classmethod
    def lose(cls) -> Fault:
        """Take the request without accepting it, then drop the connection mid-answer."""
        return cls("lose")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build a fault from its JSON form (the control endpoint of a standalone fake)."""
        return replace(cls(data["kind"]), **{k: v for k, v in data.items() if k != "kind"})


class DroppedResponse(Response):
    """Send an answer's status line and headers, then let the server close the connection."""

    def __init__(self, status_code: int, media_type: str = "application/json") -> None:
        # A declared length that never arrives: the client must see the body cut short.
        super().__init__(
            status_code=status_code, headers={"content-length": "64"}, media_type=media_type
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        # Returning with the body unfinished makes uvicorn close the transport: the client has
        # sent its whole request and sees the connection end mid-answer.


@dataclass(frozen=True)
class LookupRequest:
    """One lookup (a list or search request) a fake answered."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    fault: str | None


class FakeService(Generic[R]):
    """Lifecycle, fault queues and request logs shared by the provider fakes."""

    name: ClassVar[str] = "fake"

    def __init__(self, clock: Clock = utc_now) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._lookup_faults: deque[Fault] = deque()
        self._received: list[R] = []
        self._lookups: list[LookupRequest] = []
        self._closing = threading.Event()
        self._server: ServerThread | None = None

    def routes(self) -> list[Route]:
        """Return the provider API's routes."""
        raise NotImplementedError

    def app(self) -> Starlette:
        """Build the ASGI app: the provider's routes plus a small control API under /_fake."""
        control = [
            Route("/_fake/received", self._control_received, methods=["GET"]),
            Route("/_fake/faults", self._control_faults, methods=["POST"]),
        ]
        return Starlette(routes=[*self.routes(), *control])

    @property
    def url(self) -> str:
        """Return the base URL to give the provider (and its *_BASE_URL setting)."""
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._server.url

    @property
    def received(self) -> list[R]:
        """Return a snapshot of every request received, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def lookups(self) -> list[LookupRequest]:
        """Return a snapshot of every lookup answered, oldest first."""
        with self._lock:
            return list(self._lookups)

    def fail_next(self, *faults: Fault, times: int = 1) -> None:
        """Queue faults for the next sends; `times` repeats the whole sequence."""
        with self._lock:
            self._faults.extend(list(faults) * times)

    def fail_next_lookup(self, *faults: Fault, times: int = 1) -> None:
        """Queue faults for the next lookups; `times` repeats the whole sequence."""
        with self._lock:
            self._lookup_faults.extend(list(faults) * times)

    def reset(self) -> None:
        """Forget received requests, lookups, queued faults and what the provider holds."""
        with self._lock:
            self._faults.clear()
            self._lookup_faults.clear()
            self._received.clear()
            self._lookups.clear()
            self._forget()

    def _forget(self) -> None:
        """Forget the messages the fake holds (called with the lock held)."""

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving (on a free port of 127.0.0.1 unless told otherwise)."""
        self._closing.clear()
        self._server = ServerThread(self.app(), host=host, port=port)
        self._server.start()

    def stop(self) -> None:
        """Release held answers and stop serving."""
        self._closing.set()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _next_lookup_fault(self) -> Fault | None:
        with self._lock:
            return self._lookup_faults.popleft() if self._lookup_faults else None

    def _record(self, entry: R) -> None:
        with self._lock:
            self._received.append(entry)

    def _record_lookup(self, entry: LookupRequest) -> None:
        with self._lock:
            self._lookups.append(entry)

    async def _hold(self, request: Request, seconds: float) -> None:
        """Wait `seconds`, ending early when the client goes away or the fake stops."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._closing.is_set():
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.01)  # poll

    async def _control_received(self, request: Request) -> Response:
        return JSONResponse([asdict(entry) for entry in self.received])

    async def _control_faults(self, request: Request) -> Response:
        body = json.loads(await request.body())
        items = body if isinstance(body, list) else [body]
        self.fail_next(*(Fault.from_json(item) for item in items))
        return JSONResponse({"queued": len(items)})


def serve_until_signalled(fake: FakeService[Any], host: str, port: int) -> None:
    """Run a fake in the foreground: print its URL, stop cleanly on SIGINT or SIGTERM."""
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    # Blocked before the server thread starts, so the thread inherits the mask and the signal
    # is left for sigwait here instead of interrupting the server mid-request.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    fake.start(host, port)
    try:
        print(fake.url, flush=True)
        signal.sigwait(stop_signals)
    finally:
        fake.stop()
