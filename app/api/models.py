"""Declared payload models: the API validates with them and OpenAPI is built from them."""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Literal

import email_validator
import phonenumbers
from babel import Locale, UnknownLocaleError
from babel.numbers import list_currencies
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)

from app.storage.schema import BACKORDER_TYPES, SHIPMENT_STATUSES, SUPPLY_KINDS

_TIMEZONES = frozenset(zoneinfo.available_timezones())
_CURRENCIES = frozenset(list_currencies())


@lru_cache(maxsize=65_536)
def _e164(value: str) -> str:
    # Cached: repeat customers send the same numbers, and parsing one costs tens of µs.
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number in E.164 form (+14155550123)") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if formatted != value:
        raise ValueError(f"use E.164 form: {formatted}")
    return value


@lru_cache(maxsize=4096)
def _locale(value: str) -> str:
    try:
        Locale.parse(value.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        raise ValueError("unknown locale") from None
    return value


def _timezone(value: str) -> str:
    if value not in _TIMEZONES:
        raise ValueError("unknown IANA timezone")
    return value


# Times and dates outside this range are typing mistakes, and some would not fit every database.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def _instant(value: dt.datetime) -> dt.datetime:
    try:
        in_range = EARLIEST <= value.astimezone(dt.UTC) < LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        raise ValueError("must be between the years 2000 and 2099")
    return value


def _day(value: dt.date) -> dt.date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError("must be between the years 2000 and 2099")
    return value


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("may be left out but not null")
    return value


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# In a JSON text, such a character can only arrive escaped (or as a raw DEL byte).
_CONTROL_IN_JSON = re.compile(rb"\\u00[01][0-9a-fA-F]|\\u007[fF]|\\[bf]|\x7f")
# The WHATWG form-validation address syntax: a practical check for ASCII addresses.
_ASCII_EMAIL = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$"
)


def control_character_paths(raw: bytes) -> list[str]:
    """Return the paths of strings in a JSON body that hold control characters (tab and
    newlines excepted); a quick scan of the raw bytes spares the walk for ordinary bodies."""
    if not _CONTROL_IN_JSON.search(raw):
        return []
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, str):
            if _CONTROL.search(node):
                found.append(path or "(body)")
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and _CONTROL.search(key):
                    found.append(f"{path}.{key}" if path else key)
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    walk(json.loads(raw), "")
    return found


@lru_cache(maxsize=65_536)
def _email(value: str) -> str:
    if value.isascii():
        if not _ASCII_EMAIL.match(value) or len(value.partition("@")[0]) > 64:
            raise ValueError("not a valid email address")
        return value
    try:
        return email_validator.validate_email(value, check_deliverability=False).normalized
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


def _currency(value: str) -> str:
    if value not in _CURRENCIES:
        raise ValueError("unknown ISO 4217 currency code")
    return value


# Identifiers appear in URLs, so no slash, space or other character that would need care there.
Ref = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:#-]*$")]
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Phone = Annotated[str, Field(max_length=16), AfterValidator(_e164)]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
LocaleCode = Annotated[str, Field(max_length=35), AfterValidator(_locale)]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_timezone)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
Quantity = Annotated[int, Field(gt=0, le=1_000_000)]
Instant = Annotated[AwareDatetime, AfterValidator(_instant)]
Day = Annotated[dt.date, AfterValidator(_day)]
Text = Annotated[str, Field(min_length=1, max_length=300)]
Url = Annotated[HttpUrl, Field(max_length=2048)]
BackorderType = Literal[
    "standard", "preorder", "custom", "dropship", "manufacturer", "seasonal", "indefinite"
]
ShipmentStatus = Literal[
    "label_created", "in_transit", "out_for_delivery", "delivered", "exception", "returned", "lost"
]
SupplyKind = Literal["purchase_order", "production", "vendor"]

assert set(BackorderType.__args__) == set(BACKORDER_TYPES)  # type: ignore[attr-defined]
assert set(ShipmentStatus.__args__) == set(SHIPMENT_STATUSES)  # type: ignore[attr-defined]
assert set(SupplyKind.__args__) == set(SUPPLY_KINDS)  # type: ignore[attr-defined]


class Payload(BaseModel):
    """Base for request bodies: strict types, unknown fields rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=True)


class CustomerIn(Payload):
    id: Annotated[
        str | None, Field(min_length=1, max_length=64, description="The brand's customer id")
    ] = None
    email: Annotated[Email | None, Field(max_length=320)] = None
    phone: Phone | None = None
    name: Annotated[str | None, Field(max_length=200)] = None
    locale: LocaleCode | None = None
    timezone: TimeZone | None = None
    sms_consent: bool = False
    email_consent: bool = True

    @model_validator(mode="after")
    def _reachable(self) -> CustomerIn:
        if not (self.id or self.email or self.phone):
            raise ValueError("a customer needs at least one of id, email or phone")
        return self


class ShippingIn(Payload):
    region: Annotated[
        str | None,
        Field(
            max_length=64,
            pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$",
            description="ISO 3166 country or subdivision, e.g. US-CA",
        ),
    ] = None
    city: Annotated[str | None, Field(max_length=100)] = None
    postal_code: Annotated[str | None, Field(max_length=16)] = None


LineStatusIn = Literal["in_stock", "backordered", "cancelled", "substituted"]


class LineIn(Payload):
    ref: Ref | None = Field(None, description="The brand's line id; defaults to the SKU")
    sku: Sku
    title: Text
    image_url: Url | None = None
    quantity: Quantity
    unit_price: Annotated[int, Field(ge=0, le=10**12, description="In minor units (cents)")]
    status: LineStatusIn = "in_stock"
    backorder_type: BackorderType | None = Field(
        None, description="Required sense for backordered lines; defaults to standard"
    )
    vendor_date: Day | None = Field(None, description="A drop-ship vendor's promised date")

    @property
    def key(self) -> str:
        """Return the line's reference within its order."""
        return self.ref or self.sku


class ShipmentLineIn(Payload):
    line: Ref = Field(description="The order line's ref (or SKU when lines have no ref)")
    quantity: Quantity


class ShipmentIn(Payload):
    ref: Ref = Field(description="The brand's parcel id, unique within the order")
    carrier: Annotated[str, Field(min_length=1, max_length=64)]
    service: Annotated[str | None, Field(max_length=64)] = None
    tracking_number: Annotated[str, Field(min_length=1, max_length=64)]
    tracking_url: Url | None = None
    status: ShipmentStatus = "label_created"
    promised_date: Day | None = None
    carrier_eta: Day | None = None
    shipped_at: Instant | None = None
    delivered_at: Instant | None = None
    lines: Annotated[list[ShipmentLineIn], Field(min_length=1, max_length=500)]

    def repeats(self, prefix: str = "") -> list[dict[str, str]]:
        """List lines named twice in this parcel, each at its path."""
        return _repeats(
            [item.line for item in self.lines],
            lambda k: f"{prefix}lines[{k}].line",
            "this line is already in the parcel; give it once with its total quantity",
        )


class ShipmentPatch(Payload):
    """Only the fields sent change; null clears a date or the link."""

    status: ShipmentStatus | None = None
    carrier_eta: Day | None = None
    promised_date: Day | None = None
    tracking_url: Url | None = None
    delivered_at: Instant | None = None

    _status_not_null = field_validator("status", mode="after")(_not_null)


class OrderIn(Payload):
    number: Ref = Field(description="The brand's order number; upserts are keyed on it")
    placed_at: Instant
    currency: Currency
    customer: CustomerIn
    shipping: ShippingIn = ShippingIn()
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=500)]
    shipments: Annotated[list[ShipmentIn], Field(max_length=100)] = []

    def repeats(self, prefix: str = "") -> list[dict[str, str]]:
        """List line and parcel refs used twice in this order, each at its path."""
        errors = _repeats(
            [line.key for line in self.lines],
            lambda i: f"{prefix}lines[{i}].{'ref' if self.lines[i].ref else 'sku'}",
            "another line of this order has this ref (give `ref` when a SKU repeats)",
        )
        errors += _repeats(
            [shipment.ref for shipment in self.shipments],
            lambda j: f"{prefix}shipments[{j}].ref",
            "another parcel of this order has this ref",
        )
        for j, shipment in enumerate(self.shipments):
            errors += shipment.repeats(f"{prefix}shipments[{j}].")
        return errors


def _repeats(keys: list[str], path: Callable[[int], str], message: str) -> list[dict[str, str]]:
    seen: set[str] = set()
    errors = []
    for index, key in enumerate(keys):
        if key in seen:
            errors.append({"path": path(index), "message": message})
        seen.add(key)
    return errors


class OrderBatchIn(Payload):
    orders: Annotated[list[OrderIn], Field(min_length=1, max_length=1000)]


class CheckpointIn(Payload):
    occurred_at: Instant
    status: ShipmentStatus
    description: Annotated[str, Field(min_length=1, max_length=500)]
    city: Annotated[str | None, Field(max_length=100)] = None
    region: Annotated[str | None, Field(max_length=100)] = None
    country: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = None


class AlternativeIn(Payload):
    """A similar item the shopper may switch to when this SKU misses the brand's promise."""

    sku: Sku
    title: Text
    image_url: Url | None = None
    unit_price: Annotated[int | None, Field(ge=0, le=10**12, description="In minor units")] = None


Alternatives = Annotated[list[AlternativeIn], Field(max_length=10)]


class SkuIn(Payload):
    title: Annotated[str | None, Field(max_length=300)] = None
    on_hand: Annotated[int, Field(ge=0, le=10**9)]
    production_lead_days: Annotated[int | None, Field(ge=0, le=3650)] = None
    release_date: Day | None = None
    season_start: Day | None = None
    alternatives: Alternatives = []


class SkuPatch(Payload):
    """Only the fields sent change; null clears a date or the lead time."""

    title: Annotated[str | None, Field(max_length=300)] = None
    on_hand: Annotated[int | None, Field(ge=0, le=10**9)] = None
    production_lead_days: Annotated[int | None, Field(ge=0, le=3650)] = None
    release_date: Day | None = None
    season_start: Day | None = None
    alternatives: Alternatives | None = None

    _not_null = field_validator("on_hand", "alternatives", mode="after")(_not_null)


class SupplyPatch(Payload):
    """Only the fields sent change."""

    kind: SupplyKind | None = None
    quantity: Quantity | None = None
    expected_date: Day | None = None
    confidence: Annotated[float | None, Field(ge=0, le=1)] = None

    _not_null = field_validator("*", mode="after")(_not_null)


class ReceiveIn(Payload):
    quantity: Quantity


class SupplyIn(Payload):
    ref: Ref = Field(description="The brand's purchase order or production run id")
    kind: SupplyKind = "purchase_order"
    quantity: Quantity
    expected_date: Day
    confidence: Annotated[float, Field(ge=0, le=1)] = 1.0


ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Origin = Annotated[
    str,
    Field(
        max_length=200,
        pattern=r"^https://[a-z0-9.-]+(:[0-9]{1,5})?$",
        description="An https origin, e.g. https://shop.brand.example",
    ),
]
Origins = Annotated[list[Origin], Field(max_length=10)]
ThemeTokens = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=300)]],
    Field(max_length=30, description="Overrides of the theme's tokens (colours, font, radius)"),
]
Days = Annotated[int, Field(ge=0, le=365)]
TransitRange = Annotated[
    list[Annotated[int, Field(ge=0, le=90)]], Field(min_length=2, max_length=2)
]


Channel = Literal["email", "sms"]
TriggerName = Literal[
    "backordered",
    "partial_shipment",
    "shipment_delayed",
    "eta_changed",
    "items_ready",
    "window_at_risk",
    "window_expired",
    "choice_confirmed",
    "shipment_exception",
]
MessageTriggers = Annotated[
    dict[TriggerName, Annotated[list[Channel], Field(max_length=2)]],
    Field(
        description="Channels per trigger in order of preference (an empty list turns the "
        "trigger off; a trigger left out goes to email and SMS)"
    ),
]
SmsSender = Annotated[
    str,
    Field(
        pattern=r"^(\+[1-9][0-9]{6,14}|MG[0-9a-f]{32})$",
        description="An E.164 number or a Twilio Messaging Service SID (MG…)",
    ),
]


class BrandSettings(BaseModel):
    """A brand's settings; the same fields serve as response and, all optional, as PATCH body."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: TimeZone
    default_locale: LocaleCode
    fulfillment_window_days: Annotated[int, Field(ge=1, le=365)]
    consolidation_window_days: Days
    handling_days: Days
    transit_days_min: Annotated[int, Field(ge=0, le=90)]
    transit_days_max: Annotated[int, Field(ge=0, le=90)]
    transit_by_region: dict[
        Annotated[str, Field(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")], TransitRange
    ] = Field(description='Transit days [min, max] per shipping region, e.g. {"US-HI": [4, 9]}')
    eta_change_threshold_days: Annotated[int, Field(ge=1, le=365)]
    confidence_widening_days: Days
    preorders_own_queue: bool
    choice_deadline_days: Annotated[int, Field(ge=1, le=90)]
    choice_default_action: Literal["keep", "cancel"]
    quiet_hours_start: ClockTime
    quiet_hours_end: ClockTime
    logo_url: Url | None
    support_email: Annotated[Email | None, Field(max_length=320)]
    support_phone: Phone | None
    support_url: Url | None
    theme: Annotated[str, Field(max_length=63, description="A built-in theme: default or harbor")]
    theme_tokens: ThemeTokens
    custom_css: Annotated[str | None, Field(max_length=60_000)] = Field(
        description="Extra CSS, kept only as far as the sanitizer allows"
    )
    asset_origins: Origins = Field(description="Origins custom CSS may load images and fonts from")
    frame_ancestors: Origins = Field(description="Sites allowed to embed the tracking page")
    message_triggers: MessageTriggers
    message_fanout: Literal["all", "first"] = Field(
        description="Send each trigger on every listed channel the shopper can receive, or only "
        "on the first"
    )
    coalesce_minutes: Annotated[int, Field(ge=0, le=1440)] = Field(
        description="News for one order and channel within this many minutes goes out as one"
    )
    messages_per_order_per_day: Annotated[int, Field(ge=1, le=50)] = Field(
        description="At most this many messages per order, channel and day; more waits a day"
    )
    stall_after_days: Annotated[int, Field(ge=1, le=30)] = Field(
        description="A parcel on its way with no carrier scan for this many days is told as "
        "late (shipment_delayed news, a shipment.late webhook)"
    )
    email_from: Annotated[Email | None, Field(max_length=320)]
    sms_from: SmsSender | None


class BrandOut(BrandSettings):
    model_config = ConfigDict(extra="forbid")

    slug: str
    custom_css_removed: list[str] = Field(
        default=[], description="What the sanitizer took out of the CSS just sent"
    )


class BrandPatch(Payload):
    """Only the fields sent change."""

    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    timezone: TimeZone | None = None
    default_locale: LocaleCode | None = None
    fulfillment_window_days: Annotated[int | None, Field(ge=1, le=365)] = None
    consolidation_window_days: Days | None = None
    handling_days: Days | None = None
    transit_days_min: Annotated[int | None, Field(ge=0, le=90)] = None
    transit_days_max: Annotated[int | None, Field(ge=0, le=90)] = None
    transit_by_region: (
        dict[Annotated[str, Field(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")], TransitRange] | None
    ) = None
    eta_change_threshold_days: Annotated[int | None, Field(ge=1, le=365)] = None
    confidence_widening_days: Days | None = None
    preorders_own_queue: bool | None = None
    choice_deadline_days: Annotated[int | None, Field(ge=1, le=90)] = None
    choice_default_action: Literal["keep", "cancel"] | None = None
    quiet_hours_start: ClockTime | None = None
    quiet_hours_end: ClockTime | None = None
    logo_url: Url | None = None
    support_email: Annotated[Email | None, Field(max_length=320)] = None
    support_phone: Phone | None = None
    support_url: Url | None = None
    theme: Annotated[str | None, Field(max_length=63)] = None
    theme_tokens: ThemeTokens | None = None
    custom_css: Annotated[str | None, Field(max_length=60_000)] = None
    asset_origins: Origins | None = None
    frame_ancestors: Origins | None = None
    message_triggers: MessageTriggers | None = None
    message_fanout: Literal["all", "first"] | None = None
    coalesce_minutes: Annotated[int | None, Field(ge=0, le=1440)] = None
    messages_per_order_per_day: Annotated[int | None, Field(ge=1, le=50)] = None
    stall_after_days: Annotated[int | None, Field(ge=1, le=30)] = None
    email_from: Annotated[Email | None, Field(max_length=320)] = None
    sms_from: SmsSender | None = None

    _required = field_validator(
        "name",
        "timezone",
        "default_locale",
        "fulfillment_window_days",
        "consolidation_window_days",
        "handling_days",
        "transit_days_min",
        "transit_days_max",
        "transit_by_region",
        "eta_change_threshold_days",
        "confidence_widening_days",
        "preorders_own_queue",
        "choice_deadline_days",
        "choice_default_action",
        "quiet_hours_start",
        "quiet_hours_end",
        "theme",
        "theme_tokens",
        "asset_origins",
        "frame_ancestors",
        "message_triggers",
        "message_fanout",
        "coalesce_minutes",
        "messages_per_order_per_day",
        "stall_after_days",
        mode="after",
    )(_not_null)


# Responses ---------------------------------------------------------------------------------


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerOut(Out):
    id: str | None
    email: str | None
    phone: str | None
    name: str | None
    locale: str | None
    timezone: str | None
    sms_consent: bool
    email_consent: bool


class DeliveryRange(Out):
    earliest: dt.date
    latest: dt.date


class LineEtaOut(Out):
    queue: str = Field(description="stock, preorder, dropship or custom")
    queue_position: int = Field(description="1 is next in line for this SKU's supply")
    available_from: dt.date | None
    ship_by: dt.date | None
    delivery: DeliveryRange | None
    reason: str = Field(description="What sets the date: restock, release_date, production, …")
    supply_ref: str | None
    window_state: str = Field(description="on_track, at_risk, no_date or expired")
    group: str | None = Field(description="Key of the expected parcel the line travels in")


class ExpectedParcelOut(Out):
    key: str
    kind: str = Field(description="backorder, dropship, in_stock or undated")
    lines: list[str]
    ship_by: dt.date | None
    delivery: DeliveryRange | None


class LineOut(Out):
    ref: str
    sku: str
    title: str
    image_url: str | None
    quantity: int
    unit_price: int
    status: str
    backorder_type: str | None
    vendor_date: dt.date | None
    shipped_quantity: int
    eta: LineEtaOut | None = Field(description="For waiting (backordered) lines")


class ShipmentLineOut(Out):
    line: str
    quantity: int


class CheckpointOut(Out):
    occurred_at: dt.datetime
    status: str
    description: str
    city: str | None
    region: str | None
    country: str | None


class ShipmentOut(Out):
    ref: str
    carrier: str
    service: str | None
    tracking_number: str
    tracking_url: str | None
    status: str
    promised_date: dt.date | None
    carrier_eta: dt.date | None
    delayed: bool = Field(description="The carrier's ETA is past the promised date")
    shipped_at: dt.datetime | None
    delivered_at: dt.datetime | None
    lines: list[ShipmentLineOut]
    checkpoints: list[CheckpointOut]


class ChoiceOut(Out):
    id: int
    line: str
    reason: Literal["at_risk", "expired"]
    state: str = Field(
        description="open, made, defaulted, needs_person (a person should step in) or closed"
    )
    deadline: dt.datetime
    default_action: Literal["keep", "cancel"]
    decision: str | None = Field(description="keep, switch or refund, once decided")
    alternative: str | None = Field(description="The SKU switched to")
    decided_at: dt.datetime | None
    decided_via: str | None = Field(description="page, sms or default")


class OrderOut(Out):
    number: str
    placed_at: dt.datetime
    currency: str
    version: int
    tracking_url: str
    customer: CustomerOut | None
    shipping: dict[str, str | None]
    lines: list[LineOut]
    shipments: list[ShipmentOut]
    window_end: dt.date = Field(description="Last day of the brand's fulfilment promise")
    expected_parcels: list[ExpectedParcelOut] = Field(
        description="Waiting lines grouped into the parcels they should leave in"
    )
    choices: list[ChoiceOut] = Field(
        default=[], description="Choices offered for lines that will miss the promise"
    )
    created_at: dt.datetime
    updated_at: dt.datetime


class UpsertResult(Out):
    number: str
    result: Literal["created", "updated", "unchanged"]
    version: int
    tracking_url: str


class BatchResult(Out):
    results: list[UpsertResult]


class AlternativeOut(Out):
    sku: str
    title: str
    image_url: str | None
    unit_price: int | None


class SkuOut(Out):
    sku: str
    title: str | None
    on_hand: int
    production_lead_days: int | None
    release_date: dt.date | None
    season_start: dt.date | None
    alternatives: list[AlternativeOut]


class SupplyOut(Out):
    ref: str
    sku: str
    kind: str
    quantity: int
    received_quantity: int
    expected_date: Day
    confidence: float


class SupplyList(Out):
    data: list[SupplyOut]


class EventOut(Out):
    id: int
    type: str
    order: str | None = Field(description="The order number the event concerns, if any")
    created_at: dt.datetime
    data: dict[str, Any]


class EventPage(Out):
    data: list[EventOut]
    next_cursor: str = Field(description="Pass as `after` to read the events that follow")


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, str]] | None = None
