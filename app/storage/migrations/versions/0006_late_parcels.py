"""late parcels: what the sweep already told, and the brand's stall threshold

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.storage.schema

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stall_after_days", sa.Integer(), server_default="4", nullable=False)
        )
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("late_for", sa.Date(), nullable=True))
        batch_op.add_column(
            sa.Column("late_told_at", app.storage.schema.UTCDateTime(), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_shipments_status_promised_date"),
            ["status", "promised_date"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipments_status_promised_date"))
        batch_op.drop_column("late_told_at")
        batch_op.drop_column("late_for")
    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.drop_column("stall_after_days")
