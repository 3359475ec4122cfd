"""Payloads of the webhook endpoint and message log APIs."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, Field, field_validator

from app.api.models import Out, Payload
from messaging.webhooks import WEBHOOK_TYPES

WebhookType = Literal[
    "choice.made",
    "choice.defaulted",
    "order.eta_changed",
    "order.window_at_risk",
    "message.failed",
    "shipment.exception",
    "shipment.late",
]
assert set(WebhookType.__args__) == set(WEBHOOK_TYPES)  # type: ignore[attr-defined]

# Plain http only reaches the machine itself: for development and tests (and only where
# WEBHOOK_ALLOW_PRIVATE lets endpoints reach this machine at all; see app.api.webhooks).
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _webhook_url(value: str) -> str:
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError("must be an https:// URL")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must not contain spaces or control characters")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; authenticate with the signature instead")
    host = parts.hostname
    if not host:
        raise ValueError("must name a host")
    try:
        parts.port  # noqa: B018 - reading it is what checks it
    except ValueError:
        raise ValueError("has an invalid port") from None
    if scheme == "http" and host not in LOCAL_HOSTS:
        raise ValueError("must be https (plain http only to localhost)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    try:
        httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    return value


def _distinct(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _present(value: Any) -> Any:
    if value is None:
        raise ValueError("may be left out but not null")
    return value


WebhookUrl = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_webhook_url)]
WebhookTypes = Annotated[
    list[WebhookType],
    Field(min_length=1, max_length=len(WEBHOOK_TYPES), description="The events to send here"),
    AfterValidator(_distinct),
]
Description = Annotated[str, Field(max_length=200)]


class WebhookEndpointIn(Payload):
    url: WebhookUrl = Field(
        description="https to a public address; http to localhost and private addresses only "
        "where the server allows them (WEBHOOK_ALLOW_PRIVATE, for development)"
    )
    events: WebhookTypes
    description: Description = ""


class WebhookEndpointPatch(Payload):
    """Only the fields sent change."""

    url: WebhookUrl | None = None
    events: WebhookTypes | None = None
    description: Description | None = None
    disabled: bool | None = Field(None, description="A disabled endpoint gets no new webhooks")

    _required = field_validator("*", mode="after")(_present)


class RotateSecretIn(Payload):
    overlap_hours: Annotated[int, Field(ge=0, le=168)] = Field(
        24, description="How long the previous secret keeps signing alongside the new one"
    )


class WebhookEndpointOut(Out):
    id: int
    url: str
    events: list[str]
    description: str
    disabled: bool
    previous_secret_until: dt.datetime | None = Field(
        description="While set and in the future, the previous secret signs too"
    )
    created_at: dt.datetime
    updated_at: dt.datetime


class WebhookEndpointWithSecret(WebhookEndpointOut):
    secret: str = Field(description="Shown only now: keep it to verify webhook-signature")


class WebhookEndpointList(Out):
    data: list[WebhookEndpointOut]


class DeliveryOut(Out):
    id: int
    webhook_id: str = Field(description="The webhook-id header: the same on retries and replays")
    type: str
    state: str
    attempts: int
    error_code: str | None
    error_detail: str | None
    due_at: dt.datetime = Field(description="When a queued delivery is (next) attempted")
    created_at: dt.datetime
    sent_at: dt.datetime | None


class DeliveryPage(Out):
    data: list[DeliveryOut]
    next_cursor: str | None = Field(description="Pass as `after` for older deliveries")


class MessageOut(Out):
    id: int
    order: str | None
    channel: str
    address: str = Field(description="Masked: the API never shows a shopper's full address")
    state: str
    attempts: int
    provider: str | None
    provider_id: str | None
    error_code: str | None
    error_detail: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None
    status_at: dt.datetime | None


class MessageDetail(MessageOut):
    locale: str
    due_at: dt.datetime
    content: dict[str, Any] | None = Field(description="What went out (or will), as rendered")


class MessagePage(Out):
    data: list[MessageOut]
    next_cursor: str | None = Field(description="Pass as `after` for older messages")
