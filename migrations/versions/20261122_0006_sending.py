"""sending at scale: per-campaign enqueue window, progress time, hourly sponsor caps

Revision ID: 0006
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "campaigns",
        sa.Column("enqueue_cursor", sa.Integer(), server_default=sa.text("-1"), nullable=False),
    )
    op.add_column(
        "campaigns", sa.Column("last_progress_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "sponsor_hourly_sends",
        sa.Column("sponsor_id", sa.String(length=64), nullable=False),
        sa.Column("hour_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(["sponsor_id"], ["sponsors.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sponsor_id", "hour_start"),
    )


def downgrade() -> None:
    op.drop_table("sponsor_hourly_sends")
    op.drop_column("campaigns", "last_progress_at")
    op.drop_column("campaigns", "enqueue_cursor")
