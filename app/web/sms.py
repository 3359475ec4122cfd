"""Twilio's inbound SMS webhook: shoppers' replies to the choice, and STOP / START / HELP.

Twilio signs each request with HMAC-SHA1 over PUBLIC_URL plus the path (and query) and every
POSTed parameter; anything unsigned, badly signed, or received while TWILIO_AUTH_TOKEN is empty
gets a bare 403. The answer is TwiML (`text/xml`); `messaging.inbound` does the rest.
"""

from __future__ import annotations

import urllib.parse

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.request_validator import RequestValidator

from app.services import Services
from messaging import inbound

INBOUND_PATH = "/hooks/twilio/inbound"
SIGNATURE_HEADER = "x-twilio-signature"
_BODY_LIMIT = 64 * 1024  # a 1,600-character text and Twilio's few dozen fields, with room
_MAX_FIELDS = 200


def _forbidden() -> Response:
    return PlainTextResponse("forbidden\n", status_code=403)


async def _body(request: Request) -> bytes | None:
    """Read the body, or None once it is over the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _BODY_LIMIT:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _BODY_LIMIT:
            return None
    return body


async def twilio_inbound(request: Request) -> Response:
    services: Services = request.state.services
    token = services.settings.twilio_auth_token
    signature = request.headers.get(SIGNATURE_HEADER, "")
    body = await _body(request)
    if not token or not signature or body is None:
        return _forbidden()
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode(), keep_blank_values=True, max_num_fields=_MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        return _forbidden()
    # A multidict, so a repeated parameter is checked the way Twilio signs it.
    params = ImmutableMultiDict(pairs)
    query = request.url.query
    url = services.settings.public_url + request.url.path + (f"?{query}" if query else "")
    if not RequestValidator(token).validate(url, params, signature):
        return _forbidden()
    sms = inbound.InboundSms(
        sid=params.get("MessageSid") or params.get("SmsSid") or "",
        from_number=params.get("From", ""),
        to_number=params.get("To", ""),
        body=params.get("Body", ""),
    )
    if not sms.sid or not sms.from_number:
        return PlainTextResponse("MessageSid and From are required.\n", status_code=400)
    async with services.db.write() as conn:
        answer = await inbound.receive(conn, sms, services.clock())
    return Response(answer.twiml, media_type="text/xml")


def routes() -> list[BaseRoute]:
    """Return this module's routes."""
    return [Route(INBOUND_PATH, twilio_inbound, methods=["POST"])]
