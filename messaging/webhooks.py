"""Signed webhooks to the brand: which events go out, what they carry, how they are signed.

Requests follow the Standard Webhooks conventions: a JSON body `{"type", "timestamp", "data"}`
and three headers, `webhook-id` (stable across retries and replays, so receivers dedupe on it),
`webhook-timestamp` (Unix seconds) and `webhook-signature` (space-separated `v1,<base64>`
HMAC-SHA256 signatures of `<id>.<timestamp>.<body>`, one per active secret).

`plan` queues one `messages` row (channel "webhook") per event and subscribed endpoint in the
caller's transaction; the dispatcher sends each with `deliver`, signing with `active_secrets`.
A payload carries the order number and the event's facts, never the shopper's email or phone.

Brands choose where the service sends requests, so by default only public addresses are
reached (`messaging.safe_http`): `blocked_host` refuses a URL naming a non-public address
(checked at registration); `deliver` resolves the host and refuses it when any address it
resolves to is not public, then checks the address each new connection reached before sending
on it, so a DNS answer that changes in between (DNS rebinding) cannot reach inside either.
`WEBHOOK_ALLOW_PRIVATE` lifts all three, for development.

Delivery failures are `messaging.providers.base.ProviderError`: retryable, except a refused
address (code `private_address`) and a URL that cannot be parsed (`invalid_url`), both permanent.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets as random
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.schema import messages, shipments, webhook_endpoints
from messaging.providers.base import Accepted, ProviderError
from messaging.safe_http import PrivateAddressError, check_public, refuse_private_peer
from messaging.safe_http import blocked_host as blocked_host  # the API checks URLs with it

# What a brand can subscribe an endpoint to.
WEBHOOK_TYPES = (
    "choice.made",
    "choice.defaulted",
    "order.eta_changed",
    "order.window_at_risk",
    "message.failed",
    "shipment.exception",
    "shipment.late",
)
# Domain events that become a webhook whatever their data says.
DIRECT_TYPES: dict[str, str] = {
    "choice_made": "choice.made",
    "choice_defaulted": "choice.defaulted",
    "eta_changed": "order.eta_changed",
    "window_at_risk": "order.window_at_risk",
    "window_expired": "order.window_at_risk",
    "message_failed": "message.failed",
    "shipment_late": "shipment.late",
}
_WINDOW_REASONS = {"window_at_risk": "at_risk", "window_expired": "expired"}
# Domain events that can change a parcel's status (their `changes` list names it).
SHIPMENT_EVENTS = frozenset({"shipment_updated", "checkpoint_added", "order_updated"})
EXCEPTION_STATUSES = frozenset({"exception", "lost", "returned"})
# Keys that may hold a shopper's contact details; dropped from payloads at any depth.
_PERSONAL = frozenset(
    {"email", "phone", "address", "to", "from", "to_number", "from_number", "customer", "name"}
)
# A failed message's error detail can quote the address it was sent to, so only these go out.
_MESSAGE_FAILED_KEYS = ("message", "channel", "trigger", "triggers", "error_code", "attempts")

SECRET_PREFIX = "whsec_"  # noqa: S105 - the marker before a secret, not one
USER_AGENT = "Whereabouts-Webhooks"
DEFAULT_TIMEOUT = 10.0


def new_secret() -> str:
    """Return a fresh signing secret: whsec_ and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(32)).decode()


def new_webhook_id() -> str:
    """Return a fresh webhook id, the receivers' deduplication key."""
    return "msg_" + random.token_urlsafe(18)


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return the webhook-signature header value: one v1 signature per secret."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(_key(secret), signed, hashlib.sha256)).decode()
        for secret in secrets
    )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items() if k not in _PERSONAL}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def webhook_type(event_type: str, data: Mapping[str, Any]) -> str | None:
    """Return the webhook type a domain event becomes, or None when it is not one.

    Shipment events qualify when `data` holds the parcel's new `status` (`plan` looks it up).
    A failed webhook is not itself announced by webhook: that would feed on its own failures.
    """
    if event_type == "message_failed" and data.get("channel") == "webhook":
        return None
    if event_type in DIRECT_TYPES:
        return DIRECT_TYPES[event_type]
    if event_type in SHIPMENT_EVENTS and data.get("status") in EXCEPTION_STATUSES:
        return "shipment.exception"
    return None


def webhook_payload(
    event_type: str, order_number: str | None, data: Mapping[str, Any], occurred_at: dt.datetime
) -> dict[str, Any]:
    """Build the Standard Webhooks body for a domain event; ValueError if it is not one."""
    kind = webhook_type(event_type, data)
    if kind is None:
        raise ValueError(f"{event_type!r} with this data is not a webhook event")
    if kind == "message.failed":
        facts = {k: data[k] for k in _MESSAGE_FAILED_KEYS if k in data}
    else:
        facts = _scrub({k: v for k, v in data.items() if k != "changes"})
    if event_type in _WINDOW_REASONS:
        facts["reason"] = _WINDOW_REASONS[event_type]
    return {"type": kind, "timestamp": _iso(occurred_at), "data": {"order": order_number, **facts}}


def _changed_parcels(event_type: str, data: Mapping[str, Any]) -> list[str]:
    """Return the refs of parcels whose status this event changed."""
    changes = data.get("changes")
    if not isinstance(changes, list):
        return []
    if event_type == "checkpoint_added" and data.get("status") not in EXCEPTION_STATUSES:
        return []
    return [
        change.removeprefix("shipments.").removesuffix(".status")
        for change in changes
        if isinstance(change, str)
        and change.startswith("shipments.")
        and change.endswith(".status")
    ]


_Candidate = tuple[int | None, str, dict[str, Any]]


def _candidates(new_events: Sequence[tuple[int | None, str, Any]]) -> list[_Candidate]:
    """Keep the events that may become webhooks, their data decoded (the ETA engine sends text)."""
    out: list[_Candidate] = []
    for order_id, event_type, raw in new_events:
        if event_type not in DIRECT_TYPES and event_type not in SHIPMENT_EVENTS:
            continue
        data = json.loads(raw) if isinstance(raw, str | bytes) else dict(raw)
        if event_type in SHIPMENT_EVENTS:
            if not _changed_parcels(event_type, data):
                continue
        elif webhook_type(event_type, data) is None:
            continue
        out.append((order_id, event_type, data))
    return out


async def _parcel_exceptions(
    conn: AsyncConnection, wanted: set[tuple[int, str]]
) -> dict[tuple[int, str], dict[str, Any]]:
    """Read the parcels whose status changed and keep those now in an exception state."""
    rows = await conn.execute(
        select(
            shipments.c.order_id,
            shipments.c.ref,
            shipments.c.status,
            shipments.c.carrier,
            shipments.c.tracking_number,
        ).where(
            shipments.c.order_id.in_(sorted({order_id for order_id, _ in wanted})),
            shipments.c.status.in_(EXCEPTION_STATUSES),
        )
    )
    return {
        (row.order_id, row.ref): {
            "shipment": row.ref,
            "status": row.status,
            "carrier": row.carrier,
            "tracking_number": row.tracking_number,
        }
        for row in rows
        if (row.order_id, row.ref) in wanted
    }


async def _resolve(conn: AsyncConnection, candidates: list[_Candidate]) -> list[_Candidate]:
    """Replace each shipment event by one event per parcel it put in an exception state."""
    wanted = {
        (order_id, ref)
        for order_id, event_type, data in candidates
        if event_type in SHIPMENT_EVENTS and order_id is not None
        for ref in _changed_parcels(event_type, data)
    }
    found = await _parcel_exceptions(conn, wanted) if wanted else {}
    out: list[_Candidate] = []
    for order_id, event_type, data in candidates:
        if event_type not in SHIPMENT_EVENTS:
            out.append((order_id, event_type, data))
            continue
        for ref in _changed_parcels(event_type, data):
            parcel = found.get((order_id, ref)) if order_id is not None else None
            if parcel is not None:
                extra = {"occurred_at": data["occurred_at"]} if "occurred_at" in data else {}
                out.append((order_id, event_type, {**parcel, **extra}))
    return out


async def plan(
    conn: AsyncConnection,
    brand_id: int,
    new_events: Sequence[tuple[int | None, str, Any]],
    order_numbers: Mapping[int, str],
    now: dt.datetime,
) -> int:
    """Queue a webhook per event and subscribed, enabled endpoint; return how many.

    Runs in the caller's transaction. Event data may be a dict or its JSON text. Events that
    cannot become webhooks cost nothing; otherwise one indexed query finds the brand's
    endpoints, and only a subscriber to `shipment.exception` makes a second one (the parcels).
    """
    candidates = _candidates(new_events)
    if not candidates:
        return 0
    endpoints = (
        await conn.execute(
            select(webhook_endpoints.c.id, webhook_endpoints.c.url, webhook_endpoints.c.events)
            .where(
                webhook_endpoints.c.brand_id == brand_id,
                webhook_endpoints.c.disabled_at.is_(None),
            )
            .order_by(webhook_endpoints.c.id)
        )
    ).all()
    if not endpoints:
        return 0
    wanted_types = {kind for endpoint in endpoints for kind in endpoint.events}
    if "shipment.exception" not in wanted_types:
        candidates = [c for c in candidates if c[1] not in SHIPMENT_EVENTS]
    candidates = await _resolve(conn, candidates)
    rows = []
    for order_id, event_type, data in candidates:
        kind = webhook_type(event_type, data)
        if kind is None or kind not in wanted_types:
            continue
        number = order_numbers.get(order_id) if order_id is not None else None
        body = json.dumps(
            webhook_payload(event_type, number, data, now), separators=(",", ":"), default=str
        )
        for endpoint in endpoints:
            if kind in endpoint.events:
                rows.append(_queued(brand_id, order_id, endpoint.id, endpoint.url, kind, body, now))
    if rows:
        await conn.execute(messages.insert(), rows)
    return len(rows)


def _queued(
    brand_id: int,
    order_id: int | None,
    endpoint_id: int,
    url: str,
    kind: str,
    body: str,
    now: dt.datetime,
    webhook_id: str | None = None,
) -> dict[str, Any]:
    return {
        "brand_id": brand_id,
        "order_id": order_id,
        "endpoint_id": endpoint_id,
        "channel": "webhook",
        "address": url,
        "locale": "en",
        "timezone": "UTC",
        "state": "queued",
        "due_at": now,
        "attempts": 0,
        "content": {"webhook_id": webhook_id or new_webhook_id(), "type": kind, "body": body},
        "created_at": now,
        "updated_at": now,
    }


def queued_replay(
    brand_id: int,
    order_id: int | None,
    endpoint_id: int,
    url: str,
    content: Mapping[str, Any],
    now: dt.datetime,
) -> dict[str, Any]:
    """Return a `messages` row that sends a stored webhook again, same body and id."""
    return _queued(
        brand_id,
        order_id,
        endpoint_id,
        url,
        content["type"],
        content["body"],
        now,
        content["webhook_id"],
    )


def secrets_in_force(
    secret: str, previous: str | None, previous_until: dt.datetime | None, now: dt.datetime
) -> list[str]:
    """Return the secrets that sign now: the current one, and the previous during the overlap."""
    if previous and previous_until is not None and previous_until > now:
        return [secret, previous]
    return [secret]


async def active_secrets(conn: AsyncConnection, endpoint_id: int, now: dt.datetime) -> list[str]:
    """Return the endpoint's signing secrets at `now`: none if it is gone or disabled."""
    row = (
        await conn.execute(
            select(
                webhook_endpoints.c.secret,
                webhook_endpoints.c.previous_secret,
                webhook_endpoints.c.previous_secret_until,
            ).where(
                webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.disabled_at.is_(None)
            )
        )
    ).one_or_none()
    if row is None:
        return []
    return secrets_in_force(row.secret, row.previous_secret, row.previous_secret_until, now)


def _refused(why: str) -> ProviderError:
    return ProviderError(
        f"refused to deliver: {why}; only public addresses are allowed (WEBHOOK_ALLOW_PRIVATE)",
        code="private_address",
        permanent=True,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    content: Mapping[str, Any],
    secrets: Sequence[str],
    now_ts: int,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
    allow_private: bool = False,
) -> Accepted:
    """POST a stored webhook, signed; Accepted on 2xx, a ProviderError otherwise.

    Unless `allow_private` (WEBHOOK_ALLOW_PRIVATE), the host is resolved first and no request
    is sent when any of its addresses is not public, nor on a new connection that reached a
    non-public address all the same (the name resolved again to connect, differently): both
    a permanent `private_address` failure. A connection `client` keeps alive was checked when
    a delivery opened it. Redirects are not followed: the brand registered this URL, and a
    redirect could point the signed request anywhere, private addresses included.
    """
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ProviderError(
            f"invalid URL: {exc}"[:200], code="invalid_url", permanent=True
        ) from None
    host = target.raw_host.decode("ascii")
    if not allow_private:
        try:
            async with asyncio.timeout(request_timeout):
                await check_public(target)
        except PrivateAddressError as exc:
            raise _refused(str(exc)) from None
        except TimeoutError:
            raise ProviderError(
                f"could not resolve the host within {request_timeout:g}s", code="timeout"
            ) from None
        except (OSError, UnicodeError) as exc:
            raise ProviderError(f"could not resolve {host}: {exc}"[:200], code="connect") from None
    webhook_id: str = content["webhook_id"]
    body = content["body"].encode()
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(now_ts),
        "webhook-signature": sign(secrets, webhook_id, now_ts, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    try:
        response = await client.post(
            target,
            content=body,
            headers=headers,
            follow_redirects=False,
            timeout=request_timeout,
            extensions={} if allow_private else {"trace": refuse_private_peer},
        )
    except PrivateAddressError:
        raise _refused(f"{host} resolved to a non-public address when connecting") from None
    except httpx.TimeoutException as exc:
        raise ProviderError(
            f"no answer within {request_timeout:g}s ({type(exc).__name__})", code="timeout"
        ) from None
    except httpx.ConnectError as exc:
        raise ProviderError(f"could not connect: {exc}"[:200], code="connect") from None
    except httpx.TransportError as exc:
        raise ProviderError(f"{type(exc).__name__}: {exc}"[:200], code="connect") from None
    if 200 <= response.status_code < 300:
        return Accepted(webhook_id)
    raise ProviderError(
        f"the endpoint answered {response.status_code} {response.reason_phrase}".strip(),
        code=f"http:{response.status_code}",
        retry_after=_retry_after(response),
    )
