"""Declared payload models: the API validates with them and OpenAPI is built from them."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated, Any, Literal

import phonenumbers
from babel import Locale, UnknownLocaleError
from babel.numbers import list_currencies
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    model_validator,
)

from app.storage.schema import BACKORDER_TYPES, SHIPMENT_STATUSES, SUPPLY_KINDS

_TIMEZONES = frozenset(zoneinfo.available_timezones())
_CURRENCIES = frozenset(list_currencies())


def _e164(value: str) -> str:
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


def _currency(value: str) -> str:
    if value not in _CURRENCIES:
        raise ValueError("unknown ISO 4217 currency code")
    return value


Ref = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:#/-]*$")]
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
Phone = Annotated[str, Field(max_length=16), AfterValidator(_e164)]
LocaleCode = Annotated[str, Field(max_length=35), AfterValidator(_locale)]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_timezone)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
Quantity = Annotated[int, Field(gt=0, le=1_000_000)]
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
    id: Annotated[str | None, Field(max_length=64, description="The brand's customer id")] = None
    email: Annotated[EmailStr | None, Field(max_length=320)] = None
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
    vendor_date: dt.date | None = Field(None, description="A drop-ship vendor's promised date")

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
    promised_date: dt.date | None = None
    carrier_eta: dt.date | None = None
    shipped_at: AwareDatetime | None = None
    delivered_at: AwareDatetime | None = None
    lines: Annotated[list[ShipmentLineIn], Field(min_length=1, max_length=500)]

    @model_validator(mode="after")
    def _distinct_lines(self) -> ShipmentIn:
        seen = [item.line for item in self.lines]
        if len(seen) != len(set(seen)):
            raise ValueError("a line appears twice in one parcel; give it once with its quantity")
        return self


class ShipmentPatch(Payload):
    status: ShipmentStatus | None = None
    carrier_eta: dt.date | None = None
    promised_date: dt.date | None = None
    tracking_url: Url | None = None
    delivered_at: AwareDatetime | None = None


class OrderIn(Payload):
    number: Ref = Field(description="The brand's order number; upserts are keyed on it")
    placed_at: AwareDatetime
    currency: Currency
    customer: CustomerIn
    shipping: ShippingIn = ShippingIn()
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=500)]
    shipments: Annotated[list[ShipmentIn], Field(max_length=100)] = []

    @model_validator(mode="after")
    def _distinct_refs(self) -> OrderIn:
        keys = [line.key for line in self.lines]
        if len(keys) != len(set(keys)):
            raise ValueError(
                "line refs must be unique within an order (give `ref` when a SKU repeats)"
            )
        parcels = [shipment.ref for shipment in self.shipments]
        if len(parcels) != len(set(parcels)):
            raise ValueError("shipment refs must be unique within an order")
        return self


class OrderBatchIn(Payload):
    orders: Annotated[list[OrderIn], Field(min_length=1, max_length=1000)]


class CheckpointIn(Payload):
    occurred_at: AwareDatetime
    status: ShipmentStatus
    description: Annotated[str, Field(min_length=1, max_length=500)]
    city: Annotated[str | None, Field(max_length=100)] = None
    region: Annotated[str | None, Field(max_length=100)] = None
    country: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = None


class SkuIn(Payload):
    title: Annotated[str | None, Field(max_length=300)] = None
    on_hand: Annotated[int, Field(ge=0, le=10**9)]
    production_lead_days: Annotated[int | None, Field(ge=0, le=3650)] = None
    release_date: dt.date | None = None
    season_start: dt.date | None = None


class SupplyIn(Payload):
    ref: Ref = Field(description="The brand's purchase order or production run id")
    kind: SupplyKind = "purchase_order"
    quantity: Quantity
    expected_date: dt.date
    confidence: Annotated[float, Field(ge=0, le=1)] = 1.0


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
    created_at: dt.datetime
    updated_at: dt.datetime


class UpsertResult(Out):
    number: str
    result: Literal["created", "updated", "unchanged"]
    version: int
    tracking_url: str


class BatchResult(Out):
    results: list[UpsertResult]


class SkuOut(Out):
    sku: str
    title: str | None
    on_hand: int
    production_lead_days: int | None
    release_date: dt.date | None
    season_start: dt.date | None


class SupplyOut(Out):
    ref: str
    sku: str
    kind: str
    quantity: int
    received_quantity: int
    expected_date: dt.date
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
