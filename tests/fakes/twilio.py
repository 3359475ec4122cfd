"""A local server that speaks Twilio's Messages API wire format.

    with FakeTwilio() as twilio:
        provider = TwilioProvider(twilio.account_sid, twilio.auth_token, twilio.url, 5.0,
                                  from_number="+15557650000")
        twilio.fail_next(Fault.rate_limited(3), twilio_error(21211))
        ...
        assert twilio.count(message_id) == 1

It checks HTTP Basic auth, answers 201 with a message resource, records every request, and
plays queued faults (see `Fault`). Recipients +15005550001, +15005550004 and +15005550009 fail
with 21211, 21610 and 21614 as with Twilio's test credentials, so a test can pick a failure
per message even with many sends in flight.

Every Message it accepted (also under a `hang` or `drop` fault, not under `lose`) is kept and
listed by `GET .../Messages.json` as Twilio lists them: filters To, From, DateSent, DateSent<
and DateSent> (a date filter leaves out Messages not sent yet, which have no date_sent), pages
of PageSize (50; at most 1000) with Page and PageToken, newest date_sent first. Where Twilio
lists Messages not sent yet is not documented; the fake lists them first. A new Message is
`queued` (`accepted` through a Messaging Service) until `set_status` moves it on, as Twilio's
carrier reports would. Times come from the fake's clock.

Standalone (prints its URL, stops on SIGINT/SIGTERM; POST /_fake/faults queues faults as JSON):

    python -m tests.fakes.twilio --port 8801
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from tests.fakes.server import (
    Clock,
    DroppedResponse,
    FakeService,
    Fault,
    LookupRequest,
    serve_until_signalled,
    utc_now,
)

ACCOUNT_SID = "AC" + "5ea7" * 8
AUTH_TOKEN = "70ce" * 8
API_VERSION = "2010-04-01"

_MESSAGES = {
    20003: "Authentication failed: check the Account SID and Auth Token.",
    20429: "Too many requests.",
    20500: "An internal server error occurred.",
    20503: "The service is unavailable.",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "A message body is required.",
    21603: "A 'From' number or a Messaging Service SID is required.",
    21604: "A 'To' number is required.",
    21610: "The recipient has unsubscribed from this sender.",
    21614: "The 'To' number {to} is not a mobile number.",
}
_CODE_FOR_STATUS = {401: 20003, 429: 20429, 500: 20500, 503: 20503}
_SENT_STATES = frozenset({"sent", "delivered", "undelivered", "read"})
_LIST_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")
MAGIC_RECIPIENTS = {"+15005550001": 21211, "+15005550004": 21610, "+15005550009": 21614}
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_CALLBACK_ID = re.compile(r"/hooks/twilio/status/([0-9]+)$")
_GSM_ASCII = frozenset(
    "\n\r !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)
_GSM_ESCAPED = frozenset("^{}\\[~]|")


def twilio_error(code: int, *, status: int = 400) -> Fault:
    """Answer the next send with Twilio error `code` (21211, 21610, 21614, ...)."""
    return Fault.error(status, code=code)


@dataclass(frozen=True)
class TwilioRequest:
    """One request the fake received, and what it answered."""

    method: str
    path: str
    account_sid: str
    form: dict[str, str]
    headers: dict[str, str]
    auth: tuple[str, str] | None
    message_id: int | None  # ours, read from the StatusCallback URL
    status: int
    sid: str | None  # the Message SID, when the send was accepted
    fault: str | None


@dataclass
class _Held:
    """A Message the fake accepted: its resource and the times it is sorted and filtered by."""

    resource: dict[str, Any]
    created: dt.datetime
    sent: dt.datetime | None = None


class FakeTwilio(FakeService[TwilioRequest]):
    """Twilio's Messages API (`/2010-04-01/Accounts/{AccountSid}/Messages.json`), on 127.0.0.1."""

    name = "twilio"

    def __init__(
        self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN, clock: Clock = utc_now
    ) -> None:
        super().__init__(clock)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._held: dict[str, _Held] = {}

    def routes(self) -> list[Route]:
        """Return the Messages API routes: create (POST) and list (GET)."""
        path = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json"
        return [
            Route(path, self._create_message, methods=["POST"]),
            Route(path, self._list_messages, methods=["GET"]),
        ]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Return the Messages the fake holds (accepted sends), oldest first."""
        with self._lock:
            return [dict(held.resource) for held in self._held.values()]

    def set_status(self, sid: str, status: str, *, error_code: int | None = None) -> None:
        """Move a Message on (sent, delivered, undelivered, failed), as carrier reports do."""
        now = self.clock()
        with self._lock:
            held = self._held[sid]
            if status in _SENT_STATES and held.sent is None:
                held.sent = now
                held.resource["date_sent"] = format_datetime(now)
            held.resource["status"] = status
            held.resource["date_updated"] = format_datetime(now)
            held.resource["error_code"] = error_code
            held.resource["error_message"] = None if error_code is None else "Undelivered"

    def rewrite_body(self, sid: str, body: str) -> None:
        """Change a held Message's body, as Twilio's own rewriting (smart encoding) may."""
        with self._lock:
            self._held[sid].resource["body"] = body

    def _forget(self) -> None:
        self._held.clear()

    def count(self, message_id: int, *, accepted_only: bool = False) -> int:
        """Count the sends received for one of our messages."""
        return sum(
            1
            for entry in self.received
            if entry.message_id == message_id and (entry.sid is not None or not accepted_only)
        )

    async def _create_message(self, request: Request) -> Response:
        account = request.path_params["account_sid"]
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        auth = _basic_auth(request.headers.get("authorization", ""))
        fault: Fault | None = None
        if auth != (self.account_sid, self.auth_token) or account != self.account_sid:
            status, payload, headers = 401, _error_body(401, 20003, None, form), {}
        else:
            fault = self._next_fault()
            if fault is not None and fault.kind == "error":
                status, headers = fault.status, fault.headers
                payload = _error_body(fault.status, fault.code, fault.message, form)
            elif fault is not None and fault.kind == "lose":
                status, payload, headers = 502, _error_body(502, 20500, None, form), {}
            elif (code := _invalid(form)) is not None:
                status, payload, headers = 400, _error_body(400, code, None, form), {}
            else:
                status, headers = 201, {}
                now = self.clock()
                payload = _message_resource(account, form, "SM" + secrets.token_hex(16), now)
                with self._lock:
                    self._held[payload["sid"]] = _Held(dict(payload), now)
        self._record(
            TwilioRequest(
                method=request.method,
                path=request.url.path,
                account_sid=account,
                form=form,
                headers=dict(request.headers),
                auth=auth,
                message_id=_message_id(form.get("StatusCallback", "")),
                status=status,
                sid=payload["sid"] if status == 201 else None,
                fault=None if fault is None else fault.kind,
            )
        )
        if fault is not None and fault.kind == "hang":
            await self._hold(request, fault.seconds)
        if fault is not None and fault.kind in ("drop", "lose"):
            return DroppedResponse(status)
        return JSONResponse(payload, status_code=status, headers=headers)

    async def _list_messages(self, request: Request) -> Response:
        account = request.path_params["account_sid"]
        query = dict(request.query_params)
        auth = _basic_auth(request.headers.get("authorization", ""))
        fault: Fault | None = None
        headers: dict[str, str] = {}
        if auth != (self.account_sid, self.auth_token) or account != self.account_sid:
            status, payload = 401, _error_body(401, 20003, None, {})
        else:
            fault = self._next_lookup_fault()
            if fault is not None and fault.kind in ("error", "lose"):
                status, headers = fault.status or 502, fault.headers
                payload = _error_body(status, fault.code, fault.message, {})
            else:
                status, payload = self._page(account, query)
        self._record_lookup(
            LookupRequest(
                request.method,
                request.url.path,
                query,
                status,
                None if fault is None else fault.kind,
            )
        )
        if fault is not None and fault.kind == "hang":
            await self._hold(request, fault.seconds)
        if fault is not None and fault.kind in ("drop", "lose"):
            return DroppedResponse(status)
        return JSONResponse(payload, status_code=status, headers=headers)

    def _page(self, account: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer one page of the list, as Twilio pages it."""
        try:
            size = int(query.get("PageSize", "50"))
            number = int(query.get("Page", "0"))
            kept = [_date_filter(name, query[name]) for name in _LIST_FILTERS[2:] if name in query]
        except ValueError:
            return 400, _error_body(400, 20001, "Invalid paging or date parameter.", {})
        if not 1 <= size <= 1000 or number < 0:
            return 400, _error_body(400, 20001, "PageSize must be 1 to 1000.", {})
        with self._lock:
            held = [
                h
                for h in self._held.values()
                if query.get("To", h.resource["to"]) == h.resource["to"]
                and query.get("From", h.resource["from"]) == h.resource["from"]
                and all(h.sent is not None and test(h.sent) for test in kept)
            ]
            # Newest date_sent first, Messages not sent yet before all; newest created first.
            held.sort(key=lambda h: (h.sent is None, h.sent or h.created, h.created), reverse=True)
            resources = [dict(h.resource) for h in held]
        start = number * size
        token = query.get("PageToken", "")
        if token.startswith("PA"):
            after = [i for i, r in enumerate(resources) if r["sid"] == token[2:]]
            start = after[0] + 1 if after else len(resources)
        chunk = resources[start : start + size]
        filters = {name: query[name] for name in _LIST_FILTERS if name in query}
        base = f"/{API_VERSION}/Accounts/{account}/Messages.json?"

        def uri(page: int, page_token: str | None = None) -> str:
            params = {**filters, "PageSize": str(size), "Page": str(page)}
            if page_token:
                params["PageToken"] = page_token
            return base + urlencode(params)

        more = start + size < len(resources)
        return 200, {
            "end": start + len(chunk) - 1 if chunk else start,
            "first_page_uri": uri(0),
            "messages": chunk,
            "next_page_uri": uri(number + 1, "PA" + chunk[-1]["sid"]) if more and chunk else None,
            "page": number,
            "page_size": size,
            "previous_page_uri": uri(number - 1) if number > 0 else None,
            "start": start,
            "uri": uri(number, token or None),
        }


def _date_filter(name: str, value: str) -> Any:
    """Read a DateSent filter (YYYY-MM-DD, or a UTC time as the twilio library writes it)."""
    if len(value) == 10:
        day = dt.date.fromisoformat(value)
        on = {
            "DateSent": lambda sent: sent.date() == day,
            "DateSent<": lambda sent: sent.date() <= day,
            "DateSent>": lambda sent: sent.date() >= day,
        }
        return on[name]
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    at = {
        "DateSent": lambda sent: sent == when,
        "DateSent<": lambda sent: sent <= when,
        "DateSent>": lambda sent: sent >= when,
    }
    return at[name]


def _basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _invalid(form: dict[str, str]) -> int | None:
    """Return the Twilio error code a real account would answer this send with, if any."""
    to = form.get("To", "")
    if not to:
        return 21604
    if not form.get("Body"):
        return 21602
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return 21603
    if not _E164.fullmatch(to):
        return 21211
    return MAGIC_RECIPIENTS.get(to)


def _error_body(
    status: int, code: int | None, message: str | None, form: dict[str, str]
) -> dict[str, Any]:
    code = code or _CODE_FOR_STATUS.get(status, status)
    text = message or _MESSAGES.get(code, "Error").format(to=form.get("To", ""))
    return {
        "code": code,
        "message": text,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _message_resource(
    account: str, form: dict[str, str], sid: str, created: dt.datetime
) -> dict[str, Any]:
    now = format_datetime(created)
    service = form.get("MessagingServiceSid") or None
    uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}"
    return {
        "account_sid": account,
        "api_version": API_VERSION,
        "body": form["Body"],
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From") or None,
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": str(_segments(form["Body"])),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        # A send through a Messaging Service starts as "accepted" until a sender is chosen.
        "status": "accepted" if service and not form.get("From") else "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": form["To"],
        "uri": f"{uri}.json",
    }


def _segments(body: str) -> int:
    """Estimate the segment count (ASCII subset of GSM-7 only: the fake need not be exact)."""
    if all(char in _GSM_ASCII or char in _GSM_ESCAPED for char in body):
        length = sum(2 if char in _GSM_ESCAPED else 1 for char in body)
        return 1 if length <= 160 else -(-length // 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def _message_id(callback: str) -> int | None:
    match = _CALLBACK_ID.search(callback.split("?", 1)[0])
    return int(match.group(1)) if match else None


def status_callback_params(
    message_sid: str,
    status: str,
    *,
    account_sid: str = ACCOUNT_SID,
    to: str = "+15551230000",
    from_: str = "+15557650000",
    error_code: int | None = None,
) -> dict[str, str]:
    """Build the form Twilio posts to a StatusCallback URL."""
    params = {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "From": from_,
        "MessageSid": message_sid,
        "MessageStatus": status,
        "SmsSid": message_sid,
        "SmsStatus": status,
        "To": to,
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params


def status_callback_request(
    public_url: str, path: str, params: dict[str, str], auth_token: str = AUTH_TOKEN
) -> dict[str, str]:
    """Return the headers Twilio sends with a webhook to `public_url + path` (signed)."""
    url = public_url.rstrip("/") + path
    signature = RequestValidator(auth_token).compute_signature(url, params)
    return {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """Yield a running FakeTwilio with the default test credentials."""
    with FakeTwilio() as fake:
        yield fake


def main(argv: list[str] | None = None) -> None:
    """Run the fake until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="A local server that speaks Twilio's API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=ACCOUNT_SID)
    parser.add_argument("--auth-token", default=AUTH_TOKEN)
    args = parser.parse_args(argv)
    serve_until_signalled(FakeTwilio(args.account_sid, args.auth_token), args.host, args.port)


if __name__ == "__main__":
    main()
