"""What the page tests share: the demo handle, a small HTML tree, form scraping, SSE reading."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import httpx

PUBLIC_URL = "https://track.example.test"
SECRET_KEY = "web-tests-secret-" + "k" * 40
API = "/api/v1"
SAME_ORIGIN = {"Origin": PUBLIC_URL}
FORM = "application/x-www-form-urlencoded"
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]{32}$")


@dataclass(frozen=True)
class Demo:
    api_key: str
    tokens: dict[str, str]  # order number -> tracking token
    now: dt.datetime

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def page(self, number: str) -> str:
        return f"/t/{self.tokens[number]}"


# A small HTML tree -------------------------------------------------------------------------

VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)
    parent: Node | None = None

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    @property
    def text(self) -> str:
        """The element's text with runs of ASCII whitespace collapsed (a thin space stays)."""
        return re.sub(r"[ \t\n\r\f]+", " ", self._raw_text()).strip()

    def _raw_text(self) -> str:
        return "".join(
            c if isinstance(c, str) else " " + c._raw_text() + " " for c in self.children
        )

    def iter(self) -> Iterator[Node]:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def find_all(
        self, tag: str | None = None, *, cls: str | None = None, **attrs: str
    ) -> list[Node]:
        found = []
        for node in self.iter():
            if tag is not None and node.tag != tag:
                continue
            if cls is not None and cls not in node.classes:
                continue
            if any(node.attrs.get(name.rstrip("_")) != value for name, value in attrs.items()):
                continue
            found.append(node)
        return found

    def find(self, tag: str | None = None, *, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls=cls, **attrs)
        assert found, f"no <{tag or '*'}> class={cls} {attrs}"
        return found[0]

    def by_id(self, ident: str) -> Node:
        found = [node for node in self.iter() if node.attrs.get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), parent=self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, dict(attrs), parent=self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def form_csrf(html: str, action: str | None = None) -> str:
    """Return the csrf value of the page's form (the one posting to `action`, if given)."""
    forms = parse(html).find_all("form")
    if action is not None:
        forms = [f for f in forms if f.attrs.get("action") == action]
    assert len(forms) == 1, f"{len(forms)} forms posting to {action}"
    return str(forms[0].find("input", name="csrf").attrs["value"])


def without_per_response_parts(html: str) -> str:
    """Blank out what each response draws afresh: the form token and the CSP nonce."""
    html = re.sub(r'name="csrf" value="[^"]*"', 'name="csrf" value=""', html)
    return re.sub(r'nonce="[^"]*"', 'nonce=""', html)


def csp(response: httpx.Response) -> dict[str, str]:
    """Read the Content-Security-Policy header into {directive: value}."""
    policy: dict[str, str] = {}
    for part in response.headers["content-security-policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        policy[name] = value
    return policy


# The API, as a brand uses it ---------------------------------------------------------------


async def add_checkpoint(
    client: httpx.AsyncClient,
    demo: Demo,
    description: str,
    *,
    number: str = "D-1001",
    parcel: str = "P2",
    ago: dt.timedelta = dt.timedelta(minutes=30),
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/orders/{number}/shipments/{parcel}/checkpoints",
        json={
            "occurred_at": (dt.datetime.now(dt.UTC) - ago).isoformat(),
            "status": "in_transit",
            "description": description,
            "city": "Oakland",
            "region": "CA",
            "country": "US",
        },
        headers=demo.headers,
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


async def get_order(client: httpx.AsyncClient, demo: Demo, number: str) -> dict[str, Any]:
    response = await client.get(f"{API}/orders/{number}", headers=demo.headers)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


async def patch_brand(client: httpx.AsyncClient, demo: Demo, **changes: Any) -> httpx.Response:
    return await client.patch(f"{API}/brand", json=changes, headers=demo.headers)


# Server-sent events ------------------------------------------------------------------------


class EventReader:
    """Read a text/event-stream into a queue of events, in the background."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        fields: dict[str, str] = {}
        async for line in self.response.aiter_lines():
            if line == "":
                if "event" in fields or "data" in fields:
                    await self.events.put(fields)
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = (
                f"{fields[name]}\n{value}" if name == "data" and name in fields else value
            )

    async def next(self, within: float) -> dict[str, str]:
        """Return the next event, failing if none comes within `within` seconds."""
        try:
            return await asyncio.wait_for(self.events.get(), within)
        except TimeoutError:
            raise AssertionError(f"no event within {within} s") from None

    async def quiet_for(self, seconds: float) -> None:
        """Fail if an event arrives within `seconds`."""
        with contextlib.suppress(TimeoutError):
            event = await asyncio.wait_for(self.events.get(), seconds)
            raise AssertionError(f"unexpected event: {event}")


@contextlib.asynccontextmanager
async def event_stream(
    base_url: str, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[httpx.Response, EventReader]]:
    timeout = httpx.Timeout(10.0, read=60.0)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout) as http,
        http.stream("GET", path, headers=headers or {}) as response,
    ):
        reader = EventReader(response) if response.status_code == 200 else None
        try:
            yield response, reader  # type: ignore[misc]
        finally:
            if reader is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await reader.task


def update_data(event: dict[str, str]) -> dict[str, Any]:
    """Check an `update` event's shape and return its JSON data."""
    assert event.get("event") == "update", event
    data: dict[str, Any] = json.loads(event["data"])
    assert event["id"] == str(data["version"]), event
    return data
