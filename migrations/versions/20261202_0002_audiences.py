"""audiences: indexes for live counts at 1M leads, lead-sync timestamps and tombstones

Revision ID: 0002
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # When upstream lead capture last changed the lead (lead sync keeps the newest).
    op.add_column("leads", sa.Column("source_updated_at", sa.DateTime(timezone=True)))
    op.create_index("ix_leads_sponsor_id", "leads", ["sponsor_id", "id"])
    op.create_index("ix_leads_sponsor_score", "leads", ["sponsor_id", "intent_score"])
    op.create_index("ix_leads_sponsor_created", "leads", ["sponsor_id", "created_at"])
    op.create_index("ix_leads_sponsor_event", "leads", ["sponsor_id", "event_id"])
    op.create_index("ix_leads_tags", "leads", ["tags"], postgresql_using="gin")
    op.create_index(
        "ix_leads_attributes",
        "leads",
        ["attributes"],
        postgresql_using="gin",
        postgresql_ops={"attributes": "jsonb_path_ops"},
    )
    op.create_index("ix_suppressions_email", "suppressions", ["email"])
    op.create_table(
        "lead_tombstones",
        sa.Column("sponsor_id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sponsor_id", "email"),
    )


def downgrade() -> None:
    op.drop_table("lead_tombstones")
    op.drop_index("ix_suppressions_email", table_name="suppressions")
    for name in (
        "ix_leads_attributes",
        "ix_leads_tags",
        "ix_leads_sponsor_event",
        "ix_leads_sponsor_created",
        "ix_leads_sponsor_score",
        "ix_leads_sponsor_id",
    ):
        op.drop_index(name, table_name="leads")
    op.drop_column("leads", "source_updated_at")
