"""The dev inbox: what the `dev` providers "sent", as a page and as JSON, for development only.

It shows every brand's messages, and so every recipient's name, address and number, to anyone
who asks: it is served only when `DEV_INBOX` is on (the demo turns it on) and email or SMS goes
to the dev provider (`EMAIL_PROVIDER`/`SMS_PROVIDER` set to `dev`, or `auto` without
SendGrid/Twilio credentials). Otherwise it is a 404, so a server that lost its provider keys
sends nothing but shows no one's messages either.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.api.problems import NotFound
from app.services import Services
from app.settings import Settings, dev_channels
from app.storage.schema import brands, messages
from app.themes.registry import TEMPLATES_DIR
from app.web.security import new_nonce, plain_headers

DEV = "dev"
LIMIT = 200
_HEAD = re.compile(r"<head(?:\s[^>]*)?>", re.IGNORECASE)
# Links in a previewed email open in a new tab, outside the sandbox (the tracking page refuses
# to be framed).
_BASE = '<base target="_blank">'


def enabled(settings: Settings) -> bool:
    """Tell whether the dev inbox is served: asked for, and a dev provider in use."""
    return settings.dev_inbox and bool(dev_channels(settings))


@dataclass(frozen=True)
class InboxEntry:
    """One message as the dev inbox shows it; fields the content lacks are empty."""

    id: int
    brand: str
    channel: str
    to: str
    state: str
    at: str
    subject: str = ""
    text: str = ""
    html: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    segments: int | None = None
    encoding: str = ""
    units: int | None = None


def _content(raw: Any) -> dict[str, Any]:
    """Read a message's stored content, whatever shape it arrived in."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _entry(row: Any) -> InboxEntry:
    content = _content(row.content)
    headers = content.get("headers")
    when = row.sent_at or row.created_at
    return InboxEntry(
        id=row.id,
        brand=row.slug,
        channel=row.channel,
        to=row.address,
        state=row.state,
        at=when.isoformat(),
        subject=_text(content.get("subject")),
        text=_text(content.get("text")),
        html=_text(content.get("html")),
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        body=_text(content.get("body")),
        segments=_count(content.get("segments")),
        encoding=_text(content.get("encoding")),
        units=_count(content.get("units")),
    )


async def _entries(services: Services, limit: int) -> list[InboxEntry]:
    async with services.db.read() as conn:
        rows = (
            await conn.execute(
                select(
                    messages.c.id,
                    messages.c.channel,
                    messages.c.address,
                    messages.c.state,
                    messages.c.content,
                    messages.c.sent_at,
                    messages.c.created_at,
                    brands.c.slug,
                )
                .join(brands, brands.c.id == messages.c.brand_id)
                .where(messages.c.provider == DEV)
                .order_by(messages.c.id.desc())
                .limit(limit)
            )
        ).all()
    return [_entry(row) for row in rows]


def preview(html: str) -> str:
    """Return an email's HTML made ready for the sandboxed preview frame."""
    match = _HEAD.search(html)
    if match is None:
        return _BASE + html
    return html[: match.end()] + _BASE + html[match.end() :]


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR / "dev"),
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _headers(nonce: str) -> dict[str, str]:
    # Previewed emails inherit this policy in their srcdoc frames and carry their own inline
    # styles, so styles are not nonce-bound here; scripts are, and the frames run none.
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' https: data:",
            "connect-src 'self'",
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {**plain_headers(), "Content-Security-Policy": policy, "Cache-Control": "no-store"}


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "")
    return min(int(raw), LIMIT) if raw.isdigit() and int(raw) > 0 else LIMIT


async def inbox_page(request: Request) -> Response:
    services: Services = request.state.services
    if not enabled(services.settings):
        return NotFound("No such endpoint.").response()
    entries = await _entries(services, _limit(request))
    nonce = new_nonce()
    html = (
        _environment()
        .get_template("inbox.html")
        .render(entries=entries, preview=preview, nonce=nonce, limit=LIMIT)
    )
    return HTMLResponse(html, headers=_headers(nonce))


async def inbox_json(request: Request) -> Response:
    services: Services = request.state.services
    if not enabled(services.settings):
        return NotFound("No such endpoint.").response()
    entries = await _entries(services, _limit(request))
    body = {"messages": [asdict(entry) for entry in entries]}
    return JSONResponse(body, headers={**plain_headers(), "Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    """Return the dev inbox routes."""
    return [
        Route("/dev/inbox.json", inbox_json, methods=["GET"]),
        Route("/dev/inbox", inbox_page, methods=["GET"]),
    ]
