"""Webhook endpoints: register, change, rotate secrets, read the delivery log, replay.

A secret is shown twice only: when the endpoint is created and when it is rotated. After a
rotation the previous secret keeps signing alongside the new one until the overlap ends, so a
receiver can switch without dropping a webhook. Only two secrets ever sign: rotating again
during an overlap retires the oldest at once.

Unless `WEBHOOK_ALLOW_PRIVATE` is on, a URL naming a loopback, private, link-local or otherwise
non-public address is refused (422): brands must not reach the server's own network through it.
Names are resolved, and checked again, at every delivery.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.endpoint import Call, Reply
from app.api.messages import (
    next_cursor,
    page,
    parse_after,
    parse_choices,
    parse_id,
    parse_limit,
)
from app.api.problems import Conflict, NotFound, field_error
from app.api.webhook_models import (
    DeliveryOut,
    DeliveryPage,
    RotateSecretIn,
    WebhookEndpointIn,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointPatch,
    WebhookEndpointWithSecret,
)
from app.storage.schema import MESSAGE_STATES, messages, webhook_endpoints
from messaging.webhooks import blocked_host, new_secret, queued_replay

# Every endpoint multiplies the brand's webhook traffic; a handful covers real integrations.
MAX_ENDPOINTS = 20
# The URL segments naming an endpoint and one of its deliveries.
ENDPOINT = "id"
DELIVERY = "delivery_id"


def _out(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "description": row.description,
        "disabled": row.disabled_at is not None,
        "previous_secret_until": row.previous_secret_until if row.previous_secret else None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


async def _endpoint(conn: AsyncConnection, brand_id: int, text: str) -> Any:
    endpoint_id = parse_id(text, "webhook endpoint")
    row = (
        await conn.execute(
            select(webhook_endpoints).where(
                webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.brand_id == brand_id
            )
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"No webhook endpoint {text!r}.")
    return row


def _require_public(call: Call, url: str) -> None:
    """Refuse a URL whose host is a non-public address, unless the server allows those."""
    if call.services.settings.webhook_allow_private:
        return
    why = blocked_host(urlsplit(url).hostname or "")
    if why is not None:
        raise field_error("url", f"must reach a public address: {why}")


async def create_webhook_endpoint(call: Call) -> Reply:
    body: WebhookEndpointIn = call.body
    _require_public(call, body.url)
    existing = (
        await call.conn.execute(
            select(func.count())
            .select_from(webhook_endpoints)
            .where(webhook_endpoints.c.brand_id == call.brand.id)
        )
    ).scalar_one()
    if existing >= MAX_ENDPOINTS:
        raise Conflict(f"A brand can have up to {MAX_ENDPOINTS} webhook endpoints.")
    secret = new_secret()
    endpoint_id = (
        await call.conn.execute(
            webhook_endpoints.insert()
            .values(
                brand_id=call.brand.id,
                url=body.url,
                description=body.description,
                events=body.events,
                secret=secret,
                created_at=call.now,
                updated_at=call.now,
            )
            .returning(webhook_endpoints.c.id)
        )
    ).scalar_one()
    row = await _endpoint(call.conn, call.brand.id, str(endpoint_id))
    return Reply(WebhookEndpointWithSecret(**_out(row), secret=secret), 201)


async def list_webhook_endpoints(call: Call) -> Reply:
    rows = await call.conn.execute(
        select(webhook_endpoints)
        .where(webhook_endpoints.c.brand_id == call.brand.id)
        .order_by(webhook_endpoints.c.id)
    )
    return Reply(WebhookEndpointList(data=[WebhookEndpointOut(**_out(row)) for row in rows]))


async def get_webhook_endpoint(call: Call) -> Reply:
    row = await _endpoint(call.conn, call.brand.id, call.path[ENDPOINT])
    return Reply(WebhookEndpointOut(**_out(row)))


async def update_webhook_endpoint(call: Call) -> Reply:
    body: WebhookEndpointPatch = call.body
    row = await _endpoint(call.conn, call.brand.id, call.path[ENDPOINT])
    if body.url is not None:
        _require_public(call, body.url)
    changes: dict[str, Any] = {
        name: getattr(body, name)
        for name in body.model_fields_set & {"url", "events", "description"}
        if getattr(body, name) != getattr(row, name)
    }
    if body.disabled is not None and body.disabled != (row.disabled_at is not None):
        changes["disabled_at"] = call.now if body.disabled else None
    if changes:
        await call.conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == row.id)
            .values(**changes, updated_at=call.now)
        )
    if "url" in changes:
        # Deliveries still waiting (retries included) go to the corrected address.
        await call.conn.execute(
            update(messages)
            .where(messages.c.endpoint_id == row.id, messages.c.state == "queued")
            .values(address=changes["url"], updated_at=call.now)
        )
    row = await _endpoint(call.conn, call.brand.id, str(row.id))
    return Reply(WebhookEndpointOut(**_out(row)))


async def delete_webhook_endpoint(call: Call) -> Reply:
    row = await _endpoint(call.conn, call.brand.id, call.path[ENDPOINT])
    # Its deliveries go with it (the foreign key cascades).
    await call.conn.execute(webhook_endpoints.delete().where(webhook_endpoints.c.id == row.id))
    return Reply(None, 204)


async def rotate_webhook_secret(call: Call) -> Reply:
    body: RotateSecretIn = call.body
    row = await _endpoint(call.conn, call.brand.id, call.path[ENDPOINT])
    secret = new_secret()
    overlap = dt.timedelta(hours=body.overlap_hours)
    await call.conn.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == row.id)
        .values(
            secret=secret,
            previous_secret=row.secret if overlap else None,
            previous_secret_until=call.now + overlap if overlap else None,
            updated_at=call.now,
        )
    )
    row = await _endpoint(call.conn, call.brand.id, str(row.id))
    return Reply(WebhookEndpointWithSecret(**_out(row), secret=secret))


_DELIVERY_COLUMNS = (
    messages.c.id,
    messages.c.order_id,
    messages.c.content,
    messages.c.state,
    messages.c.attempts,
    messages.c.error_code,
    messages.c.error_detail,
    messages.c.due_at,
    messages.c.created_at,
    messages.c.sent_at,
)


def _delivery(row: Any) -> DeliveryOut:
    content = row.content or {}
    return DeliveryOut(
        id=row.id,
        webhook_id=content.get("webhook_id", ""),
        type=content.get("type", ""),
        state=row.state,
        attempts=row.attempts,
        error_code=row.error_code,
        error_detail=row.error_detail,
        due_at=row.due_at,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )


async def list_webhook_deliveries(call: Call) -> Reply:
    endpoint = await _endpoint(call.conn, call.brand.id, call.path[ENDPOINT])
    states = parse_choices(call, "state", MESSAGE_STATES, MESSAGE_STATES)
    limit = parse_limit(call)
    stmt = select(*_DELIVERY_COLUMNS).where(
        messages.c.brand_id == call.brand.id,
        messages.c.endpoint_id == endpoint.id,
        messages.c.state.in_(states),
    )
    rows = (await call.conn.execute(page(stmt, messages.c.id, parse_after(call), limit))).all()
    return Reply(
        DeliveryPage(
            data=[_delivery(row) for row in rows[:limit]], next_cursor=next_cursor(rows, limit)
        )
    )


async def replay_webhook_delivery(call: Call) -> Reply:
    endpoint = await _endpoint(call.conn, call.brand.id, call.path[ENDPOINT])
    text = call.path[DELIVERY]
    delivery_id = parse_id(text, "delivery")
    source = (
        await call.conn.execute(
            select(*_DELIVERY_COLUMNS).where(
                messages.c.id == delivery_id,
                messages.c.brand_id == call.brand.id,
                messages.c.endpoint_id == endpoint.id,
            )
        )
    ).one_or_none()
    if source is None:
        raise NotFound(f"No delivery {text!r} for this endpoint.")
    if endpoint.disabled_at is not None:
        raise Conflict("The endpoint is disabled; enable it before replaying.")
    replay_id = (
        await call.conn.execute(
            messages.insert()
            .values(
                queued_replay(
                    call.brand.id,
                    source.order_id,
                    endpoint.id,
                    endpoint.url,
                    source.content,
                    call.now,
                )
            )
            .returning(messages.c.id)
        )
    ).scalar_one()
    replay = (
        await call.conn.execute(select(*_DELIVERY_COLUMNS).where(messages.c.id == replay_id))
    ).one()
    return Reply(_delivery(replay), 202)
