"""ETA engine: per-line ETAs, window state, what was announced, and brand ETA policy

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
from alembic import op

import app.storage.schema

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _line_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("eta_queue", sa.String(length=16), nullable=True),
        sa.Column("queue_position", sa.Integer(), nullable=True),
        sa.Column("available_from", sa.Date(), nullable=True),
        sa.Column("ship_by", sa.Date(), nullable=True),
        sa.Column("delivery_from", sa.Date(), nullable=True),
        sa.Column("delivery_to", sa.Date(), nullable=True),
        sa.Column("eta_reason", sa.String(length=32), nullable=True),
        sa.Column("eta_supply_ref", sa.String(length=64), nullable=True),
        sa.Column("eta_widening_days", sa.Integer(), nullable=True),
        sa.Column("window_state", sa.String(length=16), nullable=True),
        sa.Column("announced_ship_by", sa.Date(), nullable=True),
        sa.Column("announced_delivery_from", sa.Date(), nullable=True),
        sa.Column("announced_delivery_to", sa.Date(), nullable=True),
        sa.Column("eta_computed_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "preorders_own_queue", sa.Boolean(), server_default=sa.text("true"), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "transit_by_region",
                sa.JSON().with_variant(
                    sa.dialects.postgresql.JSONB(astext_type=sa.Text()), "postgresql"
                ),
                server_default=sa.text("'{}'"),
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("confidence_widening_days", sa.Integer(), server_default="10", nullable=False)
        )
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        for column in _line_columns():
            batch_op.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        for column in reversed(_line_columns()):
            batch_op.drop_column(column.name)
    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.drop_column("confidence_widening_days")
        batch_op.drop_column("transit_by_region")
        batch_op.drop_column("preorders_own_queue")
