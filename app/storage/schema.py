"""The tables, declared once; migrations under `migrations/versions` create them.

All times are stored in UTC (`UTCDateTime` refuses naive datetimes); calendar dates
(promised dates, ETAs, release dates) are plain dates.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (and so auto-incrementing).
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime stored in UTC on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every stored time must carry a timezone")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        parsed: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)


def _id() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _brand_id() -> Column[int]:
    return Column("brand_id", Id, ForeignKey("brands.id", ondelete="CASCADE"), nullable=False)


def _timestamps() -> list[Column[dt.datetime]]:
    return [
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    ]


brands = Table(
    "brands",
    metadata,
    _id(),
    Column("slug", String(63), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("default_locale", String(35), nullable=False, server_default="en"),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("fulfillment_window_days", Integer, nullable=False, server_default="30"),
    Column("consolidation_window_days", Integer, nullable=False, server_default="3"),
    Column("handling_days", Integer, nullable=False, server_default="1"),
    Column("transit_days_min", Integer, nullable=False, server_default="2"),
    Column("transit_days_max", Integer, nullable=False, server_default="5"),
    Column("eta_change_threshold_days", Integer, nullable=False, server_default="1"),
    Column("choice_deadline_days", Integer, nullable=False, server_default="7"),
    Column("choice_default_action", String(8), nullable=False, server_default="keep"),
    Column("quiet_hours_start", String(5), nullable=False, server_default="21:00"),
    Column("quiet_hours_end", String(5), nullable=False, server_default="08:00"),
    Column("theme", String(63), nullable=False, server_default="default"),
    Column("theme_tokens", Json, nullable=False, server_default=text("'{}'")),
    Column("logo_url", String(2048)),
    Column("support_email", String(320)),
    Column("support_phone", String(16)),
    Column("support_url", String(2048)),
    # ETA engine policy (see app.domain.eta.BrandPolicy).
    Column("preorders_own_queue", Boolean, nullable=False, server_default=text("true")),
    Column("transit_by_region", Json, nullable=False, server_default=text("'{}'")),
    Column("confidence_widening_days", Integer, nullable=False, server_default="10"),
    # The tracking page's look: sanitized CSS, who may frame it, and a version for cache keys.
    Column("custom_css", Text),
    Column("frame_ancestors", Json, nullable=False, server_default=text("'[]'")),
    Column("asset_origins", Json, nullable=False, server_default=text("'[]'")),
    Column("theme_version", Integer, nullable=False, server_default="1"),
    # Messages: which triggers go out on which channels (in order of preference), whether
    # every reachable channel or only the first gets each, coalescing and a daily cap.
    Column("message_triggers", Json, nullable=False, server_default=text("'{}'")),
    Column("message_fanout", String(8), nullable=False, server_default="all"),
    Column("coalesce_minutes", Integer, nullable=False, server_default="10"),
    # A parcel on its way with no carrier scan for this many days is told as late.
    Column("stall_after_days", Integer, nullable=False, server_default="4"),
    Column("messages_per_order_per_day", Integer, nullable=False, server_default="4"),
    Column("email_from", String(320)),
    Column("sms_from", String(34)),
    *_timestamps(),
    CheckConstraint("choice_default_action IN ('keep', 'cancel')", name="default_action"),
    CheckConstraint("fulfillment_window_days > 0", name="window_positive"),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id(),
    _brand_id(),
    Column("name", String(100), nullable=False, server_default=""),
    # The public part of the key, used to find the row; the rest is only ever stored hashed.
    Column("prefix", String(16), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime()),
    Column("revoked_at", UTCDateTime()),
    Index(None, "brand_id"),
)

customers = Table(
    "customers",
    metadata,
    _id(),
    _brand_id(),
    Column("external_id", String(64)),
    Column("email", String(320)),
    Column("phone", String(16)),  # E.164
    Column("name", String(200)),
    Column("locale", String(35)),
    Column("timezone", String(64)),
    Column("sms_consent", Boolean, nullable=False, server_default=text("false")),
    Column("email_consent", Boolean, nullable=False, server_default=text("true")),
    *_timestamps(),
    Index(None, "brand_id", "external_id", unique=True),
    Index(None, "brand_id", "email"),
    Index(None, "brand_id", "phone"),
)

orders = Table(
    "orders",
    metadata,
    _id(),
    _brand_id(),
    Column("customer_id", Id, ForeignKey("customers.id", ondelete="SET NULL")),
    Column("number", String(64), nullable=False),
    Column("placed_at", UTCDateTime(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("shipping_region", String(64)),
    Column("shipping_city", String(100)),
    Column("shipping_postal_code", String(16)),
    Column("tracking_token", String(43), nullable=False, unique=True),
    # The short link in SMS (/s/<code>); set on every new order, the long link stands in if not.
    Column("sms_code", String(16), unique=True),
    Column("version", Integer, nullable=False, server_default="1"),
    *_timestamps(),
    UniqueConstraint("brand_id", "number"),
    Index(None, "customer_id"),
)

LINE_STATUSES = ("in_stock", "backordered", "shipped", "delivered", "cancelled", "substituted")
BACKORDER_TYPES = (
    "standard",
    "preorder",
    "custom",
    "dropship",
    "manufacturer",
    "seasonal",
    "indefinite",
)

order_lines = Table(
    "order_lines",
    metadata,
    _id(),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    _brand_id(),
    Column("ref", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("title", String(300), nullable=False),
    Column("image_url", String(2048)),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("backorder_type", String(16)),
    # A date the brand already knows for this line (a drop-ship vendor's promise).
    Column("vendor_date", Date),
    # Kept by the ETA engine for waiting (backordered) lines.
    Column("eta_queue", String(16)),
    Column("queue_position", Integer),
    Column("available_from", Date),
    Column("ship_by", Date),
    Column("delivery_from", Date),
    Column("delivery_to", Date),
    Column("eta_reason", String(32)),
    Column("eta_supply_ref", String(64)),
    Column("eta_widening_days", Integer),
    Column("window_state", String(16)),
    # What the shopper was last told, so small moves add up and news is never repeated.
    Column("announced_ship_by", Date),
    Column("announced_delivery_from", Date),
    Column("announced_delivery_to", Date),
    Column("eta_computed_at", UTCDateTime()),
    # Set when stock was handed to this waiting line (it became in_stock); the units are its.
    Column("allocated_at", UTCDateTime()),
    *_timestamps(),
    UniqueConstraint("order_id", "ref"),
    # The ETA engine reads one SKU's waiting lines at a time.
    Index(None, "brand_id", "sku", "status"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint("unit_price_minor >= 0", name="price_not_negative"),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in LINE_STATUSES) + ")", name="status"
    ),
    CheckConstraint(
        "backorder_type IS NULL OR backorder_type IN ("
        + ", ".join(f"'{t}'" for t in BACKORDER_TYPES)
        + ")",
        name="backorder_type",
    ),
)

SHIPMENT_STATUSES = (
    "label_created",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "exception",
    "returned",
    "lost",
)

shipments = Table(
    "shipments",
    metadata,
    _id(),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    _brand_id(),
    Column("ref", String(64), nullable=False),
    Column("carrier", String(64), nullable=False),
    Column("service", String(64)),
    Column("tracking_number", String(64), nullable=False),
    Column("tracking_url", String(2048)),
    Column("status", String(20), nullable=False),
    Column("promised_date", Date),
    Column("carrier_eta", Date),
    Column("shipped_at", UTCDateTime()),
    Column("delivered_at", UTCDateTime()),
    Column("last_checkpoint_at", UTCDateTime()),
    # What the shopper was told of lateness: the date the parcel was last found late against
    # (app.storage.late_parcels), and when a delay was last told by any path (a carrier's later
    # date too). A date that passes is told once; a stall only when nothing was told since the
    # parcel last moved.
    Column("late_for", Date),
    Column("late_told_at", UTCDateTime()),
    *_timestamps(),
    UniqueConstraint("order_id", "ref"),
    Index(None, "brand_id", "carrier", "tracking_number"),
    Index(None, "status", "promised_date"),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in SHIPMENT_STATUSES) + ")", name="status"
    ),
)

shipment_lines = Table(
    "shipment_lines",
    metadata,
    Column("shipment_id", Id, ForeignKey("shipments.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "order_line_id",
        Id,
        ForeignKey("order_lines.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("quantity", Integer, nullable=False),
    Index(None, "order_line_id"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    _id(),
    Column("shipment_id", Id, ForeignKey("shipments.id", ondelete="CASCADE"), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("status", String(20), nullable=False),
    Column("description", String(500), nullable=False),
    Column("city", String(100)),
    Column("region", String(100)),
    Column("country", String(2)),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "shipment_id", "occurred_at"),
)

skus = Table(
    "skus",
    metadata,
    _id(),
    _brand_id(),
    Column("sku", String(64), nullable=False),
    Column("title", String(300)),
    Column("on_hand", Integer, nullable=False, server_default="0"),
    Column("production_lead_days", Integer),
    Column("release_date", Date),
    Column("season_start", Date),
    # Similar items the shopper may switch to: [{"sku", "title", "image_url", "unit_price"}].
    Column("alternatives", Json, nullable=False, server_default=text("'[]'")),
    *_timestamps(),
    UniqueConstraint("brand_id", "sku"),
    CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
)

SUPPLY_KINDS = ("purchase_order", "production", "vendor")

inbound_supply = Table(
    "inbound_supply",
    metadata,
    _id(),
    _brand_id(),
    Column("sku_id", Id, ForeignKey("skus.id", ondelete="CASCADE"), nullable=False),
    Column("ref", String(64), nullable=False),
    Column("kind", String(16), nullable=False, server_default="purchase_order"),
    Column("quantity", Integer, nullable=False),
    Column("received_quantity", Integer, nullable=False, server_default="0"),
    Column("expected_date", Date, nullable=False),
    Column("confidence", Float, nullable=False, server_default="1.0"),
    *_timestamps(),
    UniqueConstraint("sku_id", "ref"),
    Index(None, "sku_id", "expected_date"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint(
        "received_quantity >= 0 AND received_quantity <= quantity", name="received_in_range"
    ),
    CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    _brand_id(),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE")),
    Column("type", String(48), nullable=False),
    Column("data", Json, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # The writing transaction's id on PostgreSQL (0 on SQLite, whose writes are serialised):
    # readers page by (txid, id) so an event committed late is never skipped.
    Column("txid", BigInteger, nullable=False, server_default="0"),
    Index(None, "brand_id", "txid", "id"),
    Index(None, "order_id", "id"),
)

CHOICE_STATES = ("open", "made", "defaulted", "needs_person", "closed")

choices = Table(
    "choices",
    metadata,
    _id(),
    _brand_id(),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("order_line_id", Id, ForeignKey("order_lines.id", ondelete="CASCADE"), nullable=False),
    Column("reason", String(16), nullable=False),  # at_risk | expired
    Column("state", String(16), nullable=False, server_default="open"),
    Column("alternatives", Json, nullable=False, server_default=text("'[]'")),
    Column("deadline", UTCDateTime(), nullable=False),
    Column("default_action", String(8), nullable=False),
    Column("decision", String(8)),  # keep | switch | refund
    Column("alternative_sku", String(64)),
    Column("decided_at", UTCDateTime()),
    Column("decided_via", String(8)),  # page | sms | default
    # Named in SMS when one number has choices open on several orders ("2 A7").
    Column("short_ref", String(8)),
    *_timestamps(),
    Index(None, "order_id"),
    Index(None, "state", "deadline"),
    UniqueConstraint("order_line_id", "reason"),
    CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in CHOICE_STATES) + ")", name="state"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("brand_id", Id, ForeignKey("brands.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "created_at"),
)

# Which orders changed, in commit order, for processes that share a SQLite file (PostgreSQL uses
# LISTEN/NOTIFY instead). Trimmed as it grows; the orders table stays the truth.
change_log = Table(
    "change_log",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("order_id", Id, nullable=False),
    Column("version", Integer, nullable=False),
)

# Tracking-page lookups per client address and per order number, in fixed windows.
lookup_attempts = Table(
    "lookup_attempts",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("window_start", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False),
)

# --- Messaging: the outbox, what each message tells, delivery statuses, consent ---------------

CHANNELS = ("email", "sms", "webhook")
MESSAGE_STATES = (
    "queued",  # waiting for its due time (coalescing, quiet hours, caps, a retry's backoff)
    "sending",  # the request may have left: never sent again without a provider's word
    "sent",  # the provider accepted it
    "delivered",
    "undelivered",
    "failed",  # a permanent error, or retries ran out; the reason is kept
    "bounced",
    "suppressed",  # no consent, opted out or suppressed: no provider call was made
    "unknown",  # the process died (or the reply was lost) after the request left
    "dropped",  # every piece of news it carried was superseded before it went out
)

# The durable outbox: one row per message to one address (a shopper's email or phone, or a
# brand's webhook endpoint). Written in the transaction that records the news it carries.
messages = Table(
    "messages",
    metadata,
    _id(),
    _brand_id(),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE")),
    Column("endpoint_id", Id, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")),
    Column("channel", String(8), nullable=False),
    Column("address", String(2048), nullable=False),  # email, E.164 number or webhook URL
    Column("locale", String(35), nullable=False, server_default="en"),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("state", String(12), nullable=False, server_default="queued"),
    # Set while a queued message still takes more news ("order:channel"); cleared once claimed.
    Column("open_key", String(64), unique=True),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(64)),
    Column("lease_until", UTCDateTime()),
    Column("provider", String(16)),
    Column("provider_id", String(128)),
    Column("error_code", String(32)),
    Column("error_detail", String(500)),
    # What went out, as rendered (subject, text, html, sms body and segments; a webhook's body).
    Column("content", Json),
    Column("sent_at", UTCDateTime()),
    Column("status_at", UTCDateTime()),
    *_timestamps(),
    Index(None, "state", "due_at"),
    Index(None, "brand_id", "state", "id"),
    Index(None, "order_id", "channel"),
    Index(None, "provider", "provider_id"),
    Index(None, "brand_id", "channel", "address"),
    CheckConstraint("channel IN (" + ", ".join(f"'{c}'" for c in CHANNELS) + ")", name="channel"),
    CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in MESSAGE_STATES) + ")", name="state"),
)

# Each piece of news a message carries. The key (order, trigger, subject, content version and
# channel, hashed) is unique per brand, so a replayed or duplicated event never sends twice.
message_news = Table(
    "message_news",
    metadata,
    _id(),
    _brand_id(),
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE")),
    Column("trigger", String(32), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("key", String(64), nullable=False),
    Column("data", Json, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("brand_id", "key"),
    Index(None, "message_id"),
)

# Status reports from providers (callbacks, event webhooks), deduplicated on their own ids.
message_statuses = Table(
    "message_statuses",
    metadata,
    _id(),
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE")),
    Column("source", String(16), nullable=False),  # twilio | sendgrid
    Column("external_id", String(200), nullable=False),
    Column("status", String(32), nullable=False),
    Column("data", Json, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("source", "external_id"),
    Index(None, "message_id"),
)

# Addresses that must not be written to: SMS opt-outs (per brand and number), email bounces,
# spam reports and unsubscribes. `topic` is "all", or one optional kind of mail ("eta_updates").
suppressions = Table(
    "suppressions",
    metadata,
    _id(),
    _brand_id(),
    Column("channel", String(8), nullable=False),
    Column("address", String(320), nullable=False),
    Column("topic", String(32), nullable=False, server_default="all"),
    Column("reason", String(32), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("brand_id", "channel", "address", "topic"),
)

# A brand's own wording for a message part ("eta_changed.sms.text"), rendered sandboxed.
message_templates = Table(
    "message_templates",
    metadata,
    _id(),
    _brand_id(),
    Column("name", String(100), nullable=False),
    Column("source", Text, nullable=False),
    *_timestamps(),
    UniqueConstraint("brand_id", "name"),
)

# Endpoints a brand registered for signed webhooks. Signing secrets must be read to sign, so
# they are stored as issued (shown to the brand once, at creation and rotation);
# after a rotation the previous one keeps signing (alongside) until `previous_secret_until`.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    _id(),
    _brand_id(),
    Column("url", String(2048), nullable=False),
    Column("description", String(200), nullable=False, server_default=""),
    Column("events", Json, nullable=False),
    Column("secret", String(400), nullable=False),
    Column("previous_secret", String(400)),
    Column("previous_secret_until", UTCDateTime()),
    Column("disabled_at", UTCDateTime()),
    *_timestamps(),
    Index(None, "brand_id"),
)

# SMS replies as received (deduplicated on the provider's id) and what we made of them.
inbound_sms = Table(
    "inbound_sms",
    metadata,
    _id(),
    Column("brand_id", Id, ForeignKey("brands.id", ondelete="CASCADE")),
    Column("provider_id", String(64), nullable=False, unique=True),
    Column("from_number", String(16), nullable=False),
    Column("to_number", String(34), nullable=False),
    Column("body", String(1600), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("reply", Text),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Where an SMS conversation with one number stands, per brand: the question we asked last
# (which order? which alternative?) and how many replies in a row we could not read.
sms_conversations = Table(
    "sms_conversations",
    metadata,
    _id(),
    _brand_id(),
    Column("phone", String(16), nullable=False),
    Column("pending", Json, nullable=False, server_default=text("'{}'")),
    Column("unclear", Integer, nullable=False, server_default="0"),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("brand_id", "phone"),
)

# Secrets the service makes for itself and every process shares through the database: the key
# that signs form tokens and message links when SECRET_KEY is not set.
instance_secrets = Table(
    "instance_secrets",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
