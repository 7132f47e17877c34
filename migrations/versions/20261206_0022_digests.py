"""digests: subscriptions on cron schedules, and one claimed run per period

Revision ID: 0022_digests
Revises: 0022_prefs
Create Date: 2026-12-06

A team member's digest subscription holds a cron expression read in their time
zone; its timer (kind ``digest.send``) lives in ``timers``. ``digest_runs`` is
keyed by (subscription, period start) and claimed with ``ON CONFLICT DO
NOTHING`` before the digest is written, so a period sends at most one digest.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022_digests"
down_revision: str | Sequence[str] | None = "0022_prefs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "digest_subscriptions",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "sponsor_id",
            sa.String(64),
            sa.ForeignKey("sponsors.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False, server_default=sa.text("'0 8 * * *'")),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("sponsor_id", "email", name="uq_digest_subscriptions_sponsor_email"),
    )
    op.create_table(
        "digest_runs",
        sa.Column(
            "subscription_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("digest_subscriptions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", postgresql.UUID(as_uuid=True), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("subscription_id", "period_start"),
    )


def downgrade() -> None:
    op.drop_table("digest_runs")
    op.drop_table("digest_subscriptions")
