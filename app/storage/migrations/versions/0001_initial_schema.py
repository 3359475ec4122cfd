"""initial schema

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.storage.schema

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "brands",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("default_locale", sa.String(length=35), server_default="en", nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("fulfillment_window_days", sa.Integer(), server_default="30", nullable=False),
        sa.Column("consolidation_window_days", sa.Integer(), server_default="3", nullable=False),
        sa.Column("handling_days", sa.Integer(), server_default="1", nullable=False),
        sa.Column("transit_days_min", sa.Integer(), server_default="2", nullable=False),
        sa.Column("transit_days_max", sa.Integer(), server_default="5", nullable=False),
        sa.Column("eta_change_threshold_days", sa.Integer(), server_default="1", nullable=False),
        sa.Column("choice_deadline_days", sa.Integer(), server_default="7", nullable=False),
        sa.Column(
            "choice_default_action", sa.String(length=8), server_default="keep", nullable=False
        ),
        sa.Column("quiet_hours_start", sa.String(length=5), server_default="21:00", nullable=False),
        sa.Column("quiet_hours_end", sa.String(length=5), server_default="08:00", nullable=False),
        sa.Column("theme", sa.String(length=63), server_default="default", nullable=False),
        sa.Column(
            "theme_tokens",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("logo_url", sa.String(length=2048), nullable=True),
        sa.Column("support_email", sa.String(length=320), nullable=True),
        sa.Column("support_phone", sa.String(length=16), nullable=True),
        sa.Column("support_url", sa.String(length=2048), nullable=True),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "choice_default_action IN ('keep', 'cancel')", name=op.f("ck_brands_default_action")
        ),
        sa.CheckConstraint("fulfillment_window_days > 0", name=op.f("ck_brands_window_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brands")),
        sa.UniqueConstraint("slug", name=op.f("uq_brands_slug")),
    )
    op.create_table(
        "api_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), server_default="", nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_api_keys_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_brand_id"), ["brand_id"], unique=False)

    op.create_table(
        "customers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=16), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("sms_consent", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("email_consent", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_customers_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customers_brand_id_email"), ["brand_id", "email"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_customers_brand_id_external_id"),
            ["brand_id", "external_id"],
            unique=True,
        )
        batch_op.create_index(
            batch_op.f("ix_customers_brand_id_phone"), ["brand_id", "phone"], unique=False
        )

    op.create_table(
        "idempotency_keys",
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_idempotency_keys_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("brand_id", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "skus",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=True),
        sa.Column("on_hand", sa.Integer(), server_default="0", nullable=False),
        sa.Column("production_lead_days", sa.Integer(), nullable=True),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("season_start", sa.Date(), nullable=True),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("on_hand >= 0", name=op.f("ck_skus_on_hand_not_negative")),
        sa.ForeignKeyConstraint(
            ["brand_id"], ["brands.id"], name=op.f("fk_skus_brand_id_brands"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skus")),
        sa.UniqueConstraint("brand_id", "sku", name=op.f("uq_skus_brand_id_sku")),
    )
    op.create_table(
        "inbound_supply",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sku_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="purchase_order", nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("received_quantity", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expected_date", sa.Date(), nullable=False),
        sa.Column("confidence", sa.Float(), server_default="1.0", nullable=False),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1", name=op.f("ck_inbound_supply_confidence_range")
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_inbound_supply_quantity_positive")),
        sa.CheckConstraint(
            "received_quantity >= 0 AND received_quantity <= quantity",
            name=op.f("ck_inbound_supply_received_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_inbound_supply_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sku_id"], ["skus.id"], name=op.f("fk_inbound_supply_sku_id_skus"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_supply")),
        sa.UniqueConstraint("sku_id", "ref", name=op.f("uq_inbound_supply_sku_id_ref")),
    )
    with op.batch_alter_table("inbound_supply", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_supply_sku_id_expected_date"),
            ["sku_id", "expected_date"],
            unique=False,
        )

    op.create_table(
        "orders",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("placed_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("shipping_region", sa.String(length=64), nullable=True),
        sa.Column("shipping_city", sa.String(length=100), nullable=True),
        sa.Column("shipping_postal_code", sa.String(length=16), nullable=True),
        sa.Column("tracking_token", sa.String(length=43), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"], ["brands.id"], name=op.f("fk_orders_brand_id_brands"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_orders_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("brand_id", "number", name=op.f("uq_orders_brand_id_number")),
        sa.UniqueConstraint("tracking_token", name=op.f("uq_orders_tracking_token")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_orders_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("txid", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"], ["brands.id"], name=op.f("fk_events_brand_id_brands"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_events_order_id_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_brand_id_txid_id"), ["brand_id", "txid", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_events_order_id_id"), ["order_id", "id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # Readers page events by the writing transaction's id; see the events table.
        op.execute(
            "ALTER TABLE events ALTER COLUMN txid SET DEFAULT (pg_current_xact_id()::text::bigint)"
        )

    op.create_table(
        "order_lines",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("image_url", sa.String(length=2048), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("backorder_type", sa.String(length=16), nullable=True),
        sa.Column("vendor_date", sa.Date(), nullable=True),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "backorder_type IS NULL OR backorder_type IN ('standard', 'preorder', 'custom', 'dropship', 'manufacturer', 'seasonal', 'indefinite')",
            name=op.f("ck_order_lines_backorder_type"),
        ),
        sa.CheckConstraint(
            "status IN ('in_stock', 'backordered', 'shipped', 'delivered', 'cancelled', 'substituted')",
            name=op.f("ck_order_lines_status"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_order_lines_quantity_positive")),
        sa.CheckConstraint("unit_price_minor >= 0", name=op.f("ck_order_lines_price_not_negative")),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_order_lines_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_lines_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_lines")),
        sa.UniqueConstraint("order_id", "ref", name=op.f("uq_order_lines_order_id_ref")),
    )
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_order_lines_brand_id_sku_status"),
            ["brand_id", "sku", "status"],
            unique=False,
        )

    op.create_table(
        "shipments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=True),
        sa.Column("tracking_number", sa.String(length=64), nullable=False),
        sa.Column("tracking_url", sa.String(length=2048), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("promised_date", sa.Date(), nullable=True),
        sa.Column("carrier_eta", sa.Date(), nullable=True),
        sa.Column("shipped_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_checkpoint_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('label_created', 'in_transit', 'out_for_delivery', 'delivered', 'exception', 'returned', 'lost')",
            name=op.f("ck_shipments_status"),
        ),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_shipments_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_shipments_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipments")),
        sa.UniqueConstraint("order_id", "ref", name=op.f("uq_shipments_order_id_ref")),
    )
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shipments_brand_id_carrier_tracking_number"),
            ["brand_id", "carrier", "tracking_number"],
            unique=False,
        )

    op.create_table(
        "checkpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "shipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("occurred_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("region", sa.String(length=100), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.id"],
            name=op.f("fk_checkpoints_shipment_id_shipments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
    )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_checkpoints_shipment_id_occurred_at"),
            ["shipment_id", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "choices",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "order_line_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="open", nullable=False),
        sa.Column(
            "alternatives",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column("deadline", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("default_action", sa.String(length=8), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=True),
        sa.Column("alternative_sku", sa.String(length=64), nullable=True),
        sa.Column("decided_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_via", sa.String(length=8), nullable=True),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('open', 'made', 'defaulted', 'needs_person', 'closed')",
            name=op.f("ck_choices_state"),
        ),
        sa.ForeignKeyConstraint(
            ["brand_id"], ["brands.id"], name=op.f("fk_choices_brand_id_brands"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_choices_order_id_orders"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["order_line_id"],
            ["order_lines.id"],
            name=op.f("fk_choices_order_line_id_order_lines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_choices")),
    )
    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_choices_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_choices_state_deadline"), ["state", "deadline"], unique=False
        )

    op.create_table(
        "shipment_lines",
        sa.Column(
            "shipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "order_line_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_shipment_lines_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["order_line_id"],
            ["order_lines.id"],
            name=op.f("fk_shipment_lines_order_line_id_order_lines"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.id"],
            name=op.f("fk_shipment_lines_shipment_id_shipments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("shipment_id", "order_line_id", name=op.f("pk_shipment_lines")),
    )
    with op.batch_alter_table("shipment_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shipment_lines_order_line_id"), ["order_line_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("shipment_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipment_lines_order_line_id"))

    op.drop_table("shipment_lines")
    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_choices_state_deadline"))
        batch_op.drop_index(batch_op.f("ix_choices_order_id"))

    op.drop_table("choices")
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkpoints_shipment_id_occurred_at"))

    op.drop_table("checkpoints")
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipments_brand_id_carrier_tracking_number"))

    op.drop_table("shipments")
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_lines_brand_id_sku_status"))

    op.drop_table("order_lines")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_order_id_id"))
        batch_op.drop_index(batch_op.f("ix_events_brand_id_txid_id"))

    op.drop_table("events")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_customer_id"))

    op.drop_table("orders")
    with op.batch_alter_table("inbound_supply", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_supply_sku_id_expected_date"))

    op.drop_table("inbound_supply")
    op.drop_table("skus")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customers_brand_id_phone"))
        batch_op.drop_index(batch_op.f("ix_customers_brand_id_external_id"))
        batch_op.drop_index(batch_op.f("ix_customers_brand_id_email"))

    op.drop_table("customers")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_brand_id"))

    op.drop_table("api_keys")
    op.drop_table("brands")
