"""What a message template sees: plain, frozen data about the brand, the order and the news.

`messaging.compose` builds a MessageContext from the database just before a message is sent,
so dates are the current ones; the news items say what changed since the shopper last heard.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# Triggers, most important first: a message carrying several is led by the first of these.
TRIGGERS = (
    "window_expired",
    "window_at_risk",
    "shipment_exception",
    "shipment_delayed",
    "eta_changed",
    "partial_shipment",
    "items_ready",
    "backordered",
    "choice_confirmed",
)
# Optional mail: the shopper can turn it off (one-click List-Unsubscribe); the rest is
# transactional news about their own order.
OPTIONAL_EMAIL_TRIGGERS = frozenset({"eta_changed"})


@dataclass(frozen=True)
class BrandInfo:
    slug: str
    name: str
    timezone: str
    support_email: str | None = None
    support_phone: str | None = None
    support_url: str | None = None
    logo_url: str | None = None
    # Theme tokens as CSS colour values: "accent", "text", "background", "muted" at least.
    tokens: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LineInfo:
    ref: str
    title: str
    quantity: int
    status: str  # in_stock | backordered | shipped | delivered | cancelled | substituted
    backorder_type: str | None = None
    ship_by: dt.date | None = None
    delivery_from: dt.date | None = None
    delivery_to: dt.date | None = None
    eta_reason: str | None = None
    queue_position: int | None = None


@dataclass(frozen=True)
class ParcelInfo:
    ref: str
    carrier: str
    tracking_number: str
    status: str
    tracking_url: str | None = None
    promised_date: dt.date | None = None
    carrier_eta: dt.date | None = None
    lines: tuple[tuple[str, int], ...] = ()  # (title, quantity) inside this parcel


@dataclass(frozen=True)
class ChoiceInfo:
    id: int
    line_ref: str
    line_title: str
    reason: str  # at_risk | expired
    state: str  # open | made | defaulted | needs_person | closed
    deadline: dt.datetime
    default_action: str  # keep | cancel
    alternatives: tuple[dict[str, Any], ...] = ()  # {"sku", "title", ...}
    short_ref: str | None = None  # named in SMS when the number has several orders open
    decision: str | None = None  # keep | switch | refund, once made
    alternative_title: str | None = None


@dataclass(frozen=True)
class OrderInfo:
    number: str
    tracking_url: str
    customer_name: str | None
    lines: tuple[LineInfo, ...]
    parcels: tuple[ParcelInfo, ...] = ()
    choices: tuple[ChoiceInfo, ...] = ()
    sms_url: str | None = None  # the short link for SMS (/s/<code>); else SMS use tracking_url


@dataclass(frozen=True)
class NewsItem:
    """One change to tell. `data` by trigger:

    - backordered: {"lines": [line refs]}
    - partial_shipment: {"shipment": ref}
    - shipment_delayed: {"shipment": ref, "promised": iso date, "carrier_eta": iso date}
    - eta_changed: {"lines": [{"line", "direction": later|earlier, "old": {"ship_by",
      "delivery": [from, to] | None}, "new": {...}}]}
    - items_ready: {"lines": [line refs]}
    - window_at_risk / window_expired: {"lines": [line refs], "choices": [choice ids],
      "deadline": iso datetime, "default_action": keep|cancel}
    - choice_confirmed: {"choice": id, "line": ref, "decision": keep|switch|refund,
      "alternative": sku | None, "defaulted": bool}
    - shipment_exception: {"shipment": ref, "status": exception|lost|returned}
    """

    trigger: str
    subject: str
    data: dict[str, Any]


@dataclass(frozen=True)
class MessageContext:
    brand: BrandInfo
    order: OrderInfo
    news: tuple[NewsItem, ...]  # at least one; ordered by TRIGGERS, then as they happened
    locale: str  # the customer's, else the brand's default
    timezone: str  # the customer's, else the brand's
    first_sms: bool = False  # the first SMS this number gets from the brand: say how to opt out
    several_orders: bool = False  # the number has choices open on other orders: name short refs
    unsubscribe_url: str | None = None  # for optional email (ETA updates); one-click
    now: dt.datetime | None = None

    @property
    def lead(self) -> NewsItem:
        """The news that leads the message (the most important trigger)."""
        return self.news[0]
