"""messaging: outbox, news, statuses, consent, templates, webhooks, SMS replies, SMS links

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.storage.schema

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_sms",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("from_number", sa.String(length=16), nullable=False),
        sa.Column("to_number", sa.String(length=34), nullable=False),
        sa.Column("body", sa.String(length=1600), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_inbound_sms_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_sms")),
        sa.UniqueConstraint("provider_id", name=op.f("uq_inbound_sms_provider_id")),
    )
    op.create_table(
        "message_templates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_message_templates_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_templates")),
        sa.UniqueConstraint("brand_id", "name", name=op.f("uq_message_templates_brand_id_name")),
    )
    op.create_table(
        "sms_conversations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("phone", sa.String(length=16), nullable=False),
        sa.Column(
            "pending",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("unclear", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_sms_conversations_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_conversations")),
        sa.UniqueConstraint("brand_id", "phone", name=op.f("uq_sms_conversations_brand_id_phone")),
    )
    op.create_table(
        "suppressions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("topic", sa.String(length=32), server_default="all", nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_suppressions_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint(
            "brand_id",
            "channel",
            "address",
            "topic",
            name=op.f("uq_suppressions_brand_id_channel_address_topic"),
        ),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=200), server_default="", nullable=False),
        sa.Column(
            "events",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("secret", sa.String(length=400), nullable=False),
        sa.Column("previous_secret", sa.String(length=400), nullable=True),
        sa.Column(
            "previous_secret_until", app.storage.schema.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("disabled_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_webhook_endpoints_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_endpoints_brand_id"), ["brand_id"], unique=False
        )

    op.create_table(
        "messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "endpoint_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=2048), nullable=False),
        sa.Column("locale", sa.String(length=35), server_default="en", nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("state", sa.String(length=12), server_default="queued", nullable=False),
        sa.Column("open_key", sa.String(length=64), nullable=True),
        sa.Column("due_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("provider", sa.String(length=16), nullable=True),
        sa.Column("provider_id", sa.String(length=128), nullable=True),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error_detail", sa.String(length=500), nullable=True),
        sa.Column(
            "content",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("sent_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "channel IN ('email', 'sms', 'webhook')", name=op.f("ck_messages_channel")
        ),
        sa.CheckConstraint(
            "state IN ('queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'bounced', 'suppressed', 'unknown', 'dropped')",
            name=op.f("ck_messages_state"),
        ),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_messages_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_messages_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_messages_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("open_key", name=op.f("uq_messages_open_key")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_messages_brand_id_state_id"), ["brand_id", "state", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_messages_brand_id_channel_address"),
            ["brand_id", "channel", "address"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_messages_order_id_channel"), ["order_id", "channel"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_messages_provider_provider_id"),
            ["provider", "provider_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_messages_state_due_at"), ["state", "due_at"], unique=False
        )

    op.create_table(
        "message_news",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_message_news_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_news_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_message_news_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_news")),
        sa.UniqueConstraint("brand_id", "key", name=op.f("uq_message_news_brand_id_key")),
    )
    with op.batch_alter_table("message_news", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_message_news_message_id"), ["message_id"], unique=False
        )

    op.create_table(
        "message_statuses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("occurred_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_statuses_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_statuses")),
        sa.UniqueConstraint(
            "source", "external_id", name=op.f("uq_message_statuses_source_external_id")
        ),
    )
    with op.batch_alter_table("message_statuses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_message_statuses_message_id"), ["message_id"], unique=False
        )

    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "message_triggers",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default=sa.text("'{}'"),
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("message_fanout", sa.String(length=8), server_default="all", nullable=False)
        )
        batch_op.add_column(
            sa.Column("coalesce_minutes", sa.Integer(), server_default="10", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "messages_per_order_per_day", sa.Integer(), server_default="4", nullable=False
            )
        )
        batch_op.add_column(sa.Column("email_from", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("sms_from", sa.String(length=34), nullable=True))

    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("short_ref", sa.String(length=8), nullable=True))

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sms_code", sa.String(length=16), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_orders_sms_code"), ["sms_code"])


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_orders_sms_code"), type_="unique")
        batch_op.drop_column("sms_code")

    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.drop_column("short_ref")

    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.drop_column("sms_from")
        batch_op.drop_column("email_from")
        batch_op.drop_column("messages_per_order_per_day")
        batch_op.drop_column("coalesce_minutes")
        batch_op.drop_column("message_fanout")
        batch_op.drop_column("message_triggers")

    with op.batch_alter_table("message_statuses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_statuses_message_id"))

    op.drop_table("message_statuses")
    with op.batch_alter_table("message_news", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_news_message_id"))

    op.drop_table("message_news")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_state_due_at"))
        batch_op.drop_index(batch_op.f("ix_messages_provider_provider_id"))
        batch_op.drop_index(batch_op.f("ix_messages_order_id_channel"))
        batch_op.drop_index(batch_op.f("ix_messages_brand_id_state_id"))
        batch_op.drop_index(batch_op.f("ix_messages_brand_id_channel_address"))

    op.drop_table("messages")
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_endpoints_brand_id"))

    op.drop_table("webhook_endpoints")
    op.drop_table("suppressions")
    op.drop_table("sms_conversations")
    op.drop_table("message_templates")
    op.drop_table("inbound_sms")
