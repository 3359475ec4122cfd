"""tracking page: themes, alternatives, change log, lookups

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.storage.schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_change_log")),
    )
    op.create_table(
        "lookup_attempts",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("window_start", app.storage.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_lookup_attempts")),
    )
    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.add_column(sa.Column("custom_css", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "frame_ancestors",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default=sa.text("'[]'"),
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "asset_origins",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default=sa.text("'[]'"),
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("theme_version", sa.Integer(), server_default="1", nullable=False)
        )

    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_choices_order_line_id_reason"), ["order_line_id", "reason"]
        )

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("allocated_at", app.storage.schema.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("skus", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "alternatives",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default=sa.text("'[]'"),
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_column("allocated_at")

    with op.batch_alter_table("skus", schema=None) as batch_op:
        batch_op.drop_column("alternatives")

    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_choices_order_line_id_reason"), type_="unique")

    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.drop_column("theme_version")
        batch_op.drop_column("asset_origins")
        batch_op.drop_column("frame_ancestors")
        batch_op.drop_column("custom_css")

    op.drop_table("lookup_attempts")
    op.drop_table("change_log")
