"""running in production: per-sponsor API rate-limit counters shared by every API replica

Revision ID: 0005
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No foreign key: a request for an unknown sponsor is still counted (then 404s).
    op.create_table(
        "api_rate_counters",
        sa.Column("sponsor_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.String(length=32), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("sponsor_id", "bucket", "window_start"),
    )


def downgrade() -> None:
    op.drop_table("api_rate_counters")
