"""recipient_preferences: what each recipient wants per preference category

Revision ID: 0022_prefs
Revises: 0022_appts
Create Date: 2026-12-06

A row per (sponsor, address, category) the recipient or the sponsor changed;
no row reads as the defaults (not opted out, immediately, detailed). A
marketing opt-out is the sponsor's ``unsubscribed`` suppression, not a row
here, so campaigns keep excluding it as they always did. Message types name
the category they fall under (``preference_category``; NULL: preferences do
not apply), and messages gain the status ``held`` (waiting for a digest).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_prefs"
down_revision: str | Sequence[str] | None = "0022_appts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CATEGORIES = "'marketing', 'summaries', 'reminders', 'alerts', 'digests'"


def upgrade() -> None:
    op.create_table(
        "recipient_preferences",
        sa.Column(
            "sponsor_id",
            sa.String(64),
            sa.ForeignKey("sponsors.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("email", sa.String(320), primary_key=True),
        sa.Column("category", sa.String(20), primary_key=True),
        sa.Column("opted_out", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("frequency", sa.String(20), nullable=False, server_default="immediately"),
        sa.Column("format", sa.String(20), nullable=False, server_default="detailed"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            f"category IN ({_CATEGORIES})", name="ck_recipient_preferences_category"
        ),
    )
    op.add_column("message_types", sa.Column("preference_category", sa.String(20)))
    # Types made before preferences: marketing ones follow marketing, notifications
    # alerts, and the built-in appointment reminder reminders (as new ones do).
    op.execute("""
UPDATE message_types SET preference_category = CASE
    WHEN category = 'marketing' THEN 'marketing'
    WHEN category = 'notification' THEN 'alerts'
    WHEN key = 'appointment.reminder' THEN 'reminders'
END
""")
    # The digest reads held messages per sponsor in order.
    op.create_index(
        "ix_messages_held",
        "messages",
        ["sponsor_id", "created_at", "id"],
        postgresql_where=sa.text("status = 'held'"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_held", table_name="messages")
    op.drop_column("message_types", "preference_category")
    op.drop_table("recipient_preferences")
