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
from urllib.parse import parse_qsl

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from tests.fakes.server import DroppedResponse, FakeService, Fault, serve_until_signalled

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


class FakeTwilio(FakeService[TwilioRequest]):
    """Twilio's `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, on 127.0.0.1."""

    name = "twilio"

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token

    def routes(self) -> list[Route]:
        """Return the Messages API route."""
        path = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json"
        return [Route(path, self._create_message, methods=["POST"])]

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
            elif (code := _invalid(form)) is not None:
                status, payload, headers = 400, _error_body(400, code, None, form), {}
            else:
                status, headers = 201, {}
                payload = _message_resource(account, form, "SM" + secrets.token_hex(16))
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
        if fault is not None and fault.kind == "drop":
            return DroppedResponse(status)
        return JSONResponse(payload, status_code=status, headers=headers)


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


def _message_resource(account: str, form: dict[str, str], sid: str) -> dict[str, Any]:
    now = format_datetime(dt.datetime.now(dt.UTC))
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
