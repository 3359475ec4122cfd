"""Provider callbacks (Twilio status, SendGrid events) and the one-click unsubscribe link.

Callbacks are believed only when signed: Twilio's HMAC over PUBLIC_URL plus the path and every
POSTed parameter (never a URL rebuilt from Host or X-Forwarded-* headers), SendGrid's ECDSA
over the timestamp and the raw body. Anything unsigned, badly signed or unconfigured gets a
bare 403. Reports about messages we do not know are answered with success and dropped, so the
provider stops retrying them.
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import json
import logging
import urllib.parse
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from jinja2 import Environment, select_autoescape
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy import select
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.request_validator import RequestValidator

from app.api.problems import Problem
from app.services import Services
from app.storage.schema import messages
from app.web.pages import Pages
from app.web.security import new_nonce, page_headers
from app.web.tracking import BUILD
from messaging import consent, links, status

log = logging.getLogger("whereabouts.hooks")

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENT_AGE = dt.timedelta(minutes=5)
TWILIO_SIGNATURE = "x-twilio-signature"
SENDGRID_SIGNATURE = "x-twilio-email-event-webhook-signature"
SENDGRID_TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
SENDGRID_MESSAGE_ARG = "whereabouts_message_id"
UNSUBSCRIBE_TOPIC = "eta_updates"
_MAX_ID = 2**63 - 1  # ids beyond BIGINT cannot be ours
_FORM_LIMIT = 4096


class _TooLarge(Exception):
    """The request body is over the limit."""


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read the raw body, refusing one over `limit` without reading all of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _forbidden() -> Response:
    return PlainTextResponse("forbidden\n", status_code=403)


def _too_large() -> Response:
    return Problem(
        f"The body is over the limit of {MAX_BODY_BYTES} bytes.",
        code="payload-too-large",
        status=413,
    ).response()


def _our_id(value: Any) -> int | None:
    """Read one of our message ids from a provider's report (a string or a number)."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_ID:
        return None
    return int(text)


# --- Twilio ------------------------------------------------------------------------------


def _twilio_signed(
    token: str, url: str, params: ImmutableMultiDict[str, str], signature: str
) -> bool:
    # Passed as a multidict so a repeated parameter is signed the way Twilio signs it.
    return bool(RequestValidator(token).validate(url, params, signature))


async def twilio_status(request: Request) -> Response:
    services = _services(request)
    token = services.settings.twilio_auth_token
    try:
        body = await _read_body(request)
    except _TooLarge:
        return _too_large()
    signature = request.headers.get(TWILIO_SIGNATURE, "")
    if not token or not signature:
        return _forbidden()
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        return _forbidden()
    params = ImmutableMultiDict(pairs)
    query = request.url.query
    url = services.settings.public_url + request.url.path + (f"?{query}" if query else "")
    if not _twilio_signed(token, url, params, signature):
        return _forbidden()
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    reported = params.get("MessageStatus") or params.get("SmsStatus") or ""
    if not sid or not reported:
        return Problem(
            "MessageSid and MessageStatus are required.", code="invalid-parameter", status=400
        ).response()
    message_id = _our_id(request.path_params["message_id"])
    if message_id is not None:
        now = services.clock()
        async with services.db.write() as conn:
            applied = await status.apply_report(
                conn,
                source=status.TWILIO,
                external_id=f"{sid}:{reported}",
                message_id=message_id,
                status=reported,
                data=status.report_data(status.TWILIO, params),
                occurred_at=now,
                now=now,
                provider_id=sid,
            )
        log.debug("twilio status %s for message %s: applied=%s", reported, message_id, applied)
    return Response(status_code=204)


# --- SendGrid ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _sendgrid_key(text: str) -> ec.EllipticCurvePublicKey | None:
    """Load the configured verification key once; None when it is not an EC public key."""
    try:
        key = EventWebhook().convert_public_key_to_ecdsa(text.strip())
    except (ValueError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def _sendgrid_signed(
    key: ec.EllipticCurvePublicKey, payload: str, signature: str, timestamp: str
) -> bool:
    try:
        return bool(EventWebhook().verify_signature(payload, signature, timestamp, key))
    except (binascii.Error, ValueError):
        return False


def _fresh(timestamp: str, now: dt.datetime) -> bool:
    """Tell whether the signed timestamp is within five minutes of the service clock either way."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    sent = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    return abs(now - sent) <= MAX_EVENT_AGE


def _event_time(event: dict[str, Any], now: dt.datetime) -> dt.datetime:
    value = event.get("timestamp")
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, ValueError, OSError):
            return now
    return now


async def sendgrid_events(request: Request) -> Response:
    services = _services(request)
    try:
        body = await _read_body(request)
    except _TooLarge:
        return _too_large()
    signature = request.headers.get(SENDGRID_SIGNATURE, "")
    timestamp = request.headers.get(SENDGRID_TIMESTAMP, "")
    configured = services.settings.sendgrid_webhook_public_key
    now = services.clock()
    if not configured or not signature or not _fresh(timestamp, now):
        return _forbidden()
    key = _sendgrid_key(configured)
    if key is None:
        log.warning("SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 ECDSA public key")
        return _forbidden()
    try:
        payload = body.decode()
    except UnicodeDecodeError:
        return _forbidden()
    if not _sendgrid_signed(key, payload, signature, timestamp):
        return _forbidden()
    try:
        batch = json.loads(payload)
    except ValueError:
        batch = None
    if not isinstance(batch, list) or not all(isinstance(event, dict) for event in batch):
        return Problem(
            "The body must be a JSON array of event objects.", code="invalid-json", status=400
        ).response()
    applied = await _apply_batch(services, batch, now)
    log.info("sendgrid events: %d received, %d applied", len(batch), applied)
    return Response(status_code=200)


def _sendgrid_message_id(event: dict[str, Any]) -> str | None:
    """Return the X-Message-Id the send got back: sg_message_id up to its first dot."""
    value = event.get("sg_message_id")
    if not isinstance(value, str):
        return None
    return value.partition(".")[0] or None


async def _apply_batch(services: Services, batch: list[dict[str, Any]], now: dt.datetime) -> int:
    """Apply a batch's events in the order given, in one transaction; return how many counted."""
    wanted = [
        (event, message_id)
        for event in batch
        if (message_id := _our_id(event.get(SENDGRID_MESSAGE_ARG))) is not None
        and isinstance(event.get("sg_event_id"), str)
        and event["sg_event_id"]
        and isinstance(event.get("event"), str)
    ]
    if not wanted:
        return 0
    applied = 0
    async with services.db.write() as conn:
        # Lock the batch's messages in id order first: two batches touching the same messages
        # in different orders would otherwise deadlock on PostgreSQL.
        ids = sorted({message_id for _, message_id in wanted})
        await conn.execute(
            select(messages.c.id)
            .where(messages.c.id.in_(ids))
            .order_by(messages.c.id)
            .with_for_update()
        )
        for event, message_id in wanted:
            applied += await status.apply_report(
                conn,
                source=status.SENDGRID,
                external_id=event["sg_event_id"],
                message_id=message_id,
                status=event["event"],
                data=status.report_data(status.SENDGRID, event),
                occurred_at=_event_time(event, now),
                now=now,
                provider_id=_sendgrid_message_id(event),
            )
    return applied


# --- Unsubscribe -------------------------------------------------------------------------

_PAGE = Environment(autoescape=select_autoescape(default_for_string=True)).from_string(
    """<!doctype html>
<html lang="en" dir="ltr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{ heading }}{% if brand %} · {{ brand.name }}{% endif %}</title>
<link rel="stylesheet" href="/static/base.css?v={{ build }}">
{% if brand %}
<link rel="stylesheet" href="/b/{{ brand.slug }}/theme.css?v={{ brand.theme_key }}.{{ build }}">
{% endif %}
</head>
<body>
{% if brand %}<header class="brand-bar"><div class="brand-bar__inner">
{% if brand.logo %}
<img class="brand-logo" src="{{ brand.logo }}" alt="{{ brand.name }}" height="40">
{% else %}<span class="brand-name">{{ brand.name }}</span>{% endif %}
</div></header>{% endif %}
<main id="main" class="wa-page">
<section class="card">
<h1>{{ heading }}</h1>
<p>{{ text }}</p>
{% if action %}<form method="post" action="{{ action }}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit" class="button">{{ button }}</button>
</form>{% endif %}
</section>
</main>
</body>
</html>
"""
)


def _page(status_code: int, brand: Any, heading: str, text: str, **form: str) -> Response:
    html = _PAGE.render(brand=brand, heading=heading, text=text, build=BUILD, **form)
    # Never framed: the page holds a one-click button.
    headers = {**page_headers(new_nonce(), ()), "Cache-Control": "no-store"}
    return HTMLResponse(html, status_code=status_code, headers=headers)


def _not_found() -> Response:
    return _page(
        404,
        None,
        "Link not found",
        "This unsubscribe link is not valid. Check the link in your email.",
    )


async def unsubscribe(request: Request) -> Response:
    services = _services(request)
    token = request.path_params["token"]
    # The key the dispatcher signs links with: SECRET_KEY, or this start's random one.
    link_secret: str = request.state.link_secret
    message_id = links.read_unsubscribe_token(link_secret, token)
    if message_id is None:
        return _not_found()
    async with services.db.read() as conn:
        row = (
            await conn.execute(
                select(messages.c.brand_id, messages.c.channel, messages.c.address).where(
                    messages.c.id == message_id
                )
            )
        ).first()
    if row is None or row.channel != "email":
        return _not_found()
    pages: Pages = request.state.pages
    brand = await pages.brand(row.brand_id)
    if request.method == "GET":
        return _page(
            200,
            brand,
            "Stop emails about delivery-date changes?",
            f"{brand.name} will no longer email you when the expected delivery date of an "
            "order changes. You will still hear about shipments, delays and anything that "
            "needs your answer.",
            action=f"/u/{token}",
            button="Stop these emails",
        )
    # RFC 8058 one-click and our own form post the same thing; the token is the authority.
    try:
        await _read_body(request, _FORM_LIMIT)
    except _TooLarge:
        return _too_large()
    async with services.db.write() as conn:
        await consent.suppress(
            conn,
            row.brand_id,
            "email",
            row.address,
            "unsubscribe",
            services.clock(),
            topic=UNSUBSCRIBE_TOPIC,
        )
    log.info("unsubscribed message %s's address from %s", message_id, UNSUBSCRIBE_TOPIC)
    return _page(
        200,
        brand,
        "You are unsubscribed",
        f"{brand.name} will not email you about delivery-date changes any more.",
    )


def routes() -> list[BaseRoute]:
    """Return the provider callback and unsubscribe routes."""
    return [
        Route("/hooks/twilio/status/{message_id:int}", twilio_status, methods=["POST"]),
        Route("/hooks/sendgrid/events", sendgrid_events, methods=["POST"]),
        Route("/u/{token}", unsubscribe, methods=["GET", "POST"]),
    ]
