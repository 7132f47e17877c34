"""tracking: human-open/click firsts, per-link click counters, hourly timeline

Revision ID: 0004
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Another branch may add the same switch; both must be able to run.
    op.execute(
        "ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS tracking_enabled boolean "
        "NOT NULL DEFAULT true"
    )
    op.add_column(
        "campaign_deliveries",
        sa.Column("first_human_opened_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "campaign_deliveries",
        sa.Column("first_human_clicked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "campaign_links",
        sa.Column("clicks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "campaign_links",
        sa.Column("human_clicks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_table(
        "campaign_stats_hourly",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
            for name in (
                "delivered",
                "bounced",
                "complained",
                "unsubscribed",
                "opens",
                "human_opens",
                "clicks",
                "human_clicks",
            )
        ),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "bucket"),
    )
    op.create_index("ix_delivery_events_delivery", "delivery_events", ["delivery_id"])
    op.create_index(
        "ix_deliveries_sent_at",
        "campaign_deliveries",
        ["campaign_id", "sent_at"],
        postgresql_where=sa.text("sent_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_sent_at", table_name="campaign_deliveries")
    op.drop_index("ix_delivery_events_delivery", table_name="delivery_events")
    op.drop_table("campaign_stats_hourly")
    op.drop_column("campaign_links", "human_clicks")
    op.drop_column("campaign_links", "clicks")
    op.drop_column("campaign_deliveries", "first_human_clicked_at")
    op.drop_column("campaign_deliveries", "first_human_opened_at")
