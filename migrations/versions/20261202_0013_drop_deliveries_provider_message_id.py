"""drop the index on deliveries.provider_message_id: webhooks find a delivery by its tag

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

Every message the service sends carries a ``delivery_id`` tag, and Resend
echoes a message's tags in each of its webhook events, so ingestion looks a
delivery up by that id (the primary key) and checks the event's ``email_id``
against the stored one. The index served only the old lookup by provider id,
and it cost the most of the indexes a sent row writes: its keys are random, so
each entry lands on its own page (about a fifth of PostgreSQL's work per sent
row with 16 batches at once).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_provider_message_id", table_name="campaign_deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_provider_message_id",
        "campaign_deliveries",
        ["provider_message_id"],
        postgresql_where=sa.text("provider_message_id IS NOT NULL"),
    )
