"""digest_events: upstream replies and conversions, kept for the digests

Revision ID: 0024_digests2
Revises: 0023_attachment_rules
Create Date: 2026-12-06

One row per ``conversations.v1`` / ``orders.v1`` event that means a reply or a
conversion, keyed by the event so a replay adds nothing; removed after
``DIGEST_EVENTS_RETENTION_DAYS``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0024_digests2"
down_revision: str | Sequence[str] | None = "0023_attachment_rules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "digest_events",
        sa.Column("topic", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("sponsor_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column(
            "summary",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "ix_digest_events_sponsor_recorded", "digest_events", ["sponsor_id", "recorded_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_digest_events_sponsor_recorded", table_name="digest_events")
    op.drop_table("digest_events")
