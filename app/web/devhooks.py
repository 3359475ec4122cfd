"""A webhook receiver for development: brands in the demo send their signed webhooks here.

`POST /dev/webhooks` checks the Standard Webhooks signature against the secrets of the endpoints
registered at this very URL and keeps the last 100 deliveries in memory; `GET /dev/webhooks.json`
lists them. Served only while the dev inbox is (`DEV_INBOX` on and a dev provider in use). The
demo's endpoint is this server, so when `PUBLIC_URL` is a loopback or private address its
deliveries also need `WEBHOOK_ALLOW_PRIVATE` (the demo turns both on).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections import deque
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.services import Services
from app.storage.schema import webhook_endpoints
from app.web.devinbox import enabled
from messaging import webhooks

PATH = "/dev/webhooks"


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _received(request: Request) -> deque[dict[str, Any]]:
    received: deque[dict[str, Any]] = request.state.dev_webhooks
    return received


async def receive(request: Request) -> Response:
    services = _services(request)
    if not enabled(services.settings):
        return Response(status_code=404)
    body = await request.body()
    webhook_id = request.headers.get("webhook-id", "")
    stamp = request.headers.get("webhook-timestamp", "")
    offered = request.headers.get("webhook-signature", "").split()
    now = services.clock()
    async with services.db.read() as conn:
        ids = (
            await conn.execute(
                select(webhook_endpoints.c.id).where(
                    webhook_endpoints.c.url == services.settings.public_url + PATH
                )
            )
        ).scalars()
        keys = [
            key for endpoint in ids for key in await webhooks.active_secrets(conn, endpoint, now)
        ]
    verified = False
    if stamp.isdigit() and keys:
        expected = webhooks.sign(keys, webhook_id, int(stamp), body).split()
        verified = any(hmac.compare_digest(a, b) for a in expected for b in offered)
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    _received(request).appendleft(
        {
            "webhook_id": webhook_id,
            "verified": verified,
            "received_at": now.astimezone(dt.UTC).isoformat(),
            "payload": payload,
        }
    )
    return Response(status_code=204 if verified else 401)


async def listing(request: Request) -> Response:
    if not enabled(_services(request).settings):
        return Response(status_code=404)
    return JSONResponse({"webhooks": list(_received(request))})


def routes() -> list[BaseRoute]:
    """Return the dev webhook receiver's routes."""
    return [
        Route(PATH, receive, methods=["POST"]),
        Route(PATH + ".json", listing, methods=["GET"]),
    ]
