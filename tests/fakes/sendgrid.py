"""A local server that speaks SendGrid's v3 Mail Send wire format.

    with FakeSendGrid() as sendgrid:
        provider = SendGridProvider(sendgrid.api_key, sendgrid.url, 5.0)
        sendgrid.fail_next(Fault.error(500))
        ...
        assert sendgrid.received[-1].body["custom_args"] == {"whereabouts_message_id": "7"}

It checks the Bearer key, validates the JSON shape as far as a send depends on it, answers 202
with an `X-Message-Id`, records every request's exact body and headers, and plays queued
faults (see `Fault`; a 429 also carries SendGrid's X-RateLimit-* headers).

Every mail it accepted (also under a `hang` or `drop` fault, not under `lose`) shows in the
Email Activity API, `GET /v3/messages?query=...&limit=N`, as SendGrid's filter answers: a
`messages` list, newest first, of msg_id (the X-Message-Id, a dot, SendGrid's own suffix),
from_email, to_email, subject, status (`processed` until `set_status` says `delivered` or
`not_delivered`), opens_count, clicks_count and last_event_time. The query takes terms such as
`unique_args['whereabouts_message_id']="7"` or `to_email="a@b.example"`, parenthesized or not,
joined by AND. `activity_available = False` answers as an account without the paid add-on
does: 403 "access forbidden". Times come from the fake's clock.

Standalone (prints its URL, stops on SIGINT/SIGTERM; POST /_fake/faults queues faults as JSON):

    python -m tests.fakes.sendgrid --port 8802
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import (
    Clock,
    DroppedResponse,
    FakeService,
    Fault,
    LookupRequest,
    serve_until_signalled,
    utc_now,
)

API_KEY = "SG.fakesendgridkey.fortestsonly"
UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
_MESSAGES = {
    400: "The request is not valid.",
    403: "Access forbidden.",
    413: "The request body is too large.",
    429: "Too many requests.",
    500: "An internal server error occurred.",
    503: "The service is unavailable.",
}
FORBIDDEN = "access forbidden"
# One term of an activity query: name="value", or unique_args['name']="value".
_TERM = re.compile(
    r"\(?\s*(?:unique_args\['(?P<arg>[^']+)'\]|(?P<field>[a-z_]+))"
    r'\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*\)?'
)
_FIELDS = ("msg_id", "from_email", "to_email", "subject", "status")


@dataclass(frozen=True)
class SendGridRequest:
    """One request the fake received, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    raw: str
    body: Any  # the parsed JSON, None when it was not JSON
    message_id: int | None  # ours, read from custom_args.whereabouts_message_id
    status: int
    x_message_id: str | None  # set when the send was accepted
    fault: str | None


@dataclass
class _Activity:
    """A mail the fake accepted, as the activity feed shows it, and its custom arguments."""

    summary: dict[str, Any]
    unique_args: dict[str, str] = field(default_factory=dict)


class FakeSendGrid(FakeService[SendGridRequest]):
    """SendGrid's `POST /v3/mail/send` and `GET /v3/messages`, on 127.0.0.1."""

    name = "sendgrid"

    def __init__(
        self, api_key: str = API_KEY, clock: Clock = utc_now, *, activity_available: bool = True
    ) -> None:
        super().__init__(clock)
        self.api_key = api_key
        self.activity_available = activity_available
        self._activity: dict[str, _Activity] = {}  # by X-Message-Id

    def routes(self) -> list[Route]:
        """Return the Mail Send and Email Activity routes."""
        return [
            Route("/v3/mail/send", self._send, methods=["POST"]),
            Route("/v3/messages", self._filter_messages, methods=["GET"]),
        ]

    @property
    def activity(self) -> list[dict[str, Any]]:
        """Return the activity feed's messages (accepted mails), oldest first."""
        with self._lock:
            return [dict(item.summary) for item in self._activity.values()]

    def set_status(self, x_message_id: str, status: str) -> None:
        """Move an accepted mail on: `delivered` or `not_delivered`."""
        with self._lock:
            summary = self._activity[x_message_id].summary
            summary["status"] = status
            summary["last_event_time"] = _iso(self.clock())

    def _forget(self) -> None:
        self._activity.clear()

    def count(self, message_id: int, *, accepted_only: bool = False) -> int:
        """Count the sends received for one of our messages."""
        return sum(
            1
            for entry in self.received
            if entry.message_id == message_id
            and (entry.x_message_id is not None or not accepted_only)
        )

    async def _send(self, request: Request) -> Response:
        raw = (await request.body()).decode(errors="replace")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        fault: Fault | None = None
        headers: dict[str, str] = {}
        payload: Any = None
        x_message_id = None
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            status, payload = 401, _errors(UNAUTHORIZED)
        else:
            fault = self._next_fault()
            if fault is not None and fault.kind == "error":
                status, headers = fault.status, _fault_headers(fault)
                payload = _errors(fault.message or _MESSAGES.get(fault.status, "Error"))
            elif fault is not None and fault.kind == "lose":
                status, payload = 502, _errors("Bad gateway.")
            elif errors := _problems(body):
                status, payload = 400, {"errors": errors}
            else:
                status = 202
                x_message_id = secrets.token_urlsafe(16)
                headers = {"X-Message-Id": x_message_id}
                self._keep(x_message_id, body)
        self._record(
            SendGridRequest(
                method=request.method,
                path=request.url.path,
                headers=dict(request.headers),
                raw=raw,
                body=body,
                message_id=_message_id(body),
                status=status,
                x_message_id=x_message_id,
                fault=None if fault is None else fault.kind,
            )
        )
        if fault is not None and fault.kind == "hang":
            await self._hold(request, fault.seconds)
        if fault is not None and fault.kind in ("drop", "lose"):
            return DroppedResponse(status)
        if payload is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(payload, status_code=status, headers=headers)

    def _keep(self, x_message_id: str, body: dict[str, Any]) -> None:
        """Add an accepted mail (one personalization, one recipient) to the activity feed."""
        now = self.clock()
        personalization = body["personalizations"][0]
        summary = {
            "from_email": body["from"]["email"],
            "msg_id": f"{x_message_id}.filterdrecv-fake-1-{int(now.timestamp()):X}-0.0",
            "subject": personalization.get("subject") or body.get("subject"),
            "to_email": personalization["to"][0]["email"],
            "status": "processed",
            "opens_count": 0,
            "clicks_count": 0,
            "last_event_time": _iso(now),
        }
        args = {**body.get("custom_args", {}), **personalization.get("custom_args", {})}
        with self._lock:
            self._activity[x_message_id] = _Activity(summary, args)

    async def _filter_messages(self, request: Request) -> Response:
        query = dict(request.query_params)
        fault: Fault | None = None
        headers: dict[str, str] = {}
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            status, payload = 401, _errors(UNAUTHORIZED)
        elif not self.activity_available:
            status, payload = 403, _errors(FORBIDDEN)
        else:
            fault = self._next_lookup_fault()
            if fault is not None and fault.kind in ("error", "lose"):
                status, headers = fault.status or 502, _fault_headers(fault)
                payload = _errors(fault.message or _MESSAGES.get(status, "Error"))
            else:
                status, payload = self._search(query)
        kind = None if fault is None else fault.kind
        self._record_lookup(LookupRequest(request.method, request.url.path, query, status, kind))
        if fault is not None and fault.kind == "hang":
            await self._hold(request, fault.seconds)
        if fault is not None and fault.kind in ("drop", "lose"):
            return DroppedResponse(status)
        return JSONResponse(payload, status_code=status, headers=headers)

    def _search(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer a filter of the activity feed, newest first."""
        try:
            limit = int(query["limit"])
        except (KeyError, ValueError):
            return 400, _errors("limit must be a number from 1 to 1000", "limit")
        if not 1 <= limit <= 1000:
            return 400, _errors("limit must be a number from 1 to 1000", "limit")
        terms = _terms(query.get("query", ""))
        if terms is None:
            return 400, _errors("invalid syntax", "query")
        with self._lock:
            found = [
                dict(item.summary)
                for item in reversed(self._activity.values())
                if all(
                    (item.unique_args.get(name) if arg else item.summary.get(name)) == value
                    for arg, name, value in terms
                )
            ]
        return 200, {"messages": found[:limit]}


def _terms(query: str) -> list[tuple[bool, str, str]] | None:
    """Read `a="1" AND unique_args['b']="2"` as (is a unique arg, name, value); None if invalid."""
    terms = []
    for part in re.split(r"\s+AND\s+", query.strip()) if query.strip() else []:
        match = _TERM.fullmatch(part.strip())
        if match is None or (match["field"] and match["field"] not in _FIELDS):
            return None
        value = re.sub(r"\\(.)", r"\1", match["value"])
        terms.append((match["arg"] is not None, match["arg"] or match["field"], value))
    return terms


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _errors(message: str, field: str | None = None) -> dict[str, Any]:
    return {"errors": [_error(message, field)]}


def _error(message: str, field: str | None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": None}


def _fault_headers(fault: Fault) -> dict[str, str]:
    headers = dict(fault.headers)
    if fault.status == 429:
        wait = float(headers.get("Retry-After", "1"))
        headers.setdefault("X-RateLimit-Limit", "600")
        headers.setdefault("X-RateLimit-Remaining", "0")
        headers.setdefault("X-RateLimit-Reset", str(math.ceil(time.time() + wait)))
    return headers


def _problems(body: Any) -> list[dict[str, Any]]:
    """List what SendGrid would reject in a v3 mail send body (the parts we rely on)."""
    if not isinstance(body, dict):
        return [_error("The request body must be a JSON object.", None)]
    problems: list[dict[str, Any]] = []
    sender = body.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        problems.append(_error("The from email is required.", "from.email"))
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(_error("At least one personalization is required.", "personalizations"))
        personalizations = []
    for index, item in enumerate(personalizations):
        recipients = item.get("to") if isinstance(item, dict) else None
        if not isinstance(recipients, list) or not recipients:
            problems.append(
                _error("Each personalization needs a to list.", f"personalizations.{index}.to")
            )
        elif not all(isinstance(r, dict) and r.get("email") for r in recipients):
            problems.append(
                _error("Each recipient needs an email.", f"personalizations.{index}.to")
            )
        if not body.get("subject") and not (isinstance(item, dict) and item.get("subject")):
            problems.append(_error("A subject is required.", "subject"))
    problems.extend(_content_problems(body.get("content")))
    problems.extend(_string_map_problems(body, "custom_args"))
    problems.extend(_string_map_problems(body, "headers"))
    categories = body.get("categories", [])
    if (
        not isinstance(categories, list)
        or len(categories) > 10
        or not all(isinstance(c, str) and 0 < len(c) <= 255 for c in categories)
    ):
        problems.append(_error("Categories must be up to 10 short strings.", "categories"))
    return problems


def _content_problems(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content:
        return [_error("At least one content item is required.", "content")]
    if not all(
        isinstance(c, dict) and c.get("type") and isinstance(c.get("value"), str) and c["value"]
        for c in content
    ):
        return [_error("Each content item needs a type and a non-empty value.", "content")]
    types = [c["type"] for c in content]
    if "text/plain" in types and types[0] != "text/plain":
        return [_error("text/plain content must come first.", "content.0.type")]
    return []


def _string_map_problems(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = body.get(name, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return [_error(f"{name} values must be strings.", name)]
    return []


def _message_id(body: Any) -> int | None:
    try:
        return int(body["custom_args"]["whereabouts_message_id"])
    except (KeyError, TypeError, ValueError):
        return None


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    """Yield a running FakeSendGrid with the default test key."""
    with FakeSendGrid() as fake:
        yield fake


def main(argv: list[str] | None = None) -> None:
    """Run the fake until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="A local server that speaks SendGrid's API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=API_KEY)
    args = parser.parse_args(argv)
    serve_until_signalled(FakeSendGrid(args.api_key), args.host, args.port)


if __name__ == "__main__":
    main()
