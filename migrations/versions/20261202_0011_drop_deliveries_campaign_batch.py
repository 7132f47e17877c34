"""drop (campaign_id, batch_no) on deliveries: the pending index serves every batch lookup

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Every query by batch looks for ``pending`` rows, which the partial index
``ix_deliveries_pending`` holds; queries by campaign alone use the unique
``(campaign_id, lead_id)``. Sending rewrites each row (the update cannot be
HOT: its status is indexed), and each index adds an entry for it; one index
fewer is about a tenth less work per sent row, and less to plan and vacuum.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_campaign_batch", table_name="campaign_deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_campaign_batch", "campaign_deliveries", ["campaign_id", "batch_no"]
    )
