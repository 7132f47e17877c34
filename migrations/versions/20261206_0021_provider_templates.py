"""provider_templates: every template created at the provider, until it is deleted

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06

A row is written, and committed, before the template is created at the
provider, and gets the provider's id before the template is published, so a
crash between the provider's answer and the campaign's record of it leaves a
row the relay can delete, not a template nobody knows of. ``state``:
``creating`` (no id yet), ``active`` (the id is known), ``finished`` (its
campaign is sent or cancelled; deleted ``RESEND_TEMPLATE_GRACE_SECONDS`` after
``finished_at``, since accepted emails may still be queued at the provider).
A row goes away once the provider confirms the delete.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_templates",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "campaign_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("template_id", sa.String(100)),
        sa.Column("state", sa.String(16), nullable=False, server_default="creating"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "state IN ('creating', 'active', 'finished')", name="ck_provider_templates_state"
        ),
    )
    op.create_index("ix_provider_templates_campaign", "provider_templates", ["campaign_id"])
    op.create_index(
        "ix_provider_templates_finished",
        "provider_templates",
        ["finished_at"],
        postgresql_where=sa.text("state = 'finished'"),
    )
    # Templates the campaigns hold now become rows, so the relay deletes them too.
    op.execute("""
INSERT INTO provider_templates (campaign_id, template_id, state)
SELECT id, provider_template_id, 'active' FROM campaigns
WHERE provider_template_id IS NOT NULL AND provider_template_id <> ''
""")


def downgrade() -> None:
    op.drop_table("provider_templates")
