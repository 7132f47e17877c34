"""trigger rules and their firings

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06

A trigger rule turns an upstream event (``leads.v1``, ``conversations.v1``,
``orders.v1``) that meets its condition into messages. A firing is the
(rule, event id) pair: its primary key makes each rule fire at most once per
event, also when a topic is replayed from the start.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "trigger_rules",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "sponsor_id",
            sa.String(64),
            sa.ForeignKey("sponsors.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("condition", postgresql.JSONB(), nullable=False),
        sa.Column("actions", postgresql.JSONB(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("once_per", sa.String(200), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
    )
    op.create_index("ix_trigger_rules_sponsor_topic", "trigger_rules", ["sponsor_id", "topic"])
    op.create_table(
        "trigger_firings",
        sa.Column(
            "rule_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("trigger_rules.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("event_id", sa.String(100), primary_key=True),
        _timestamp("created_at"),
    )


def downgrade() -> None:
    op.drop_table("trigger_firings")
    op.drop_index("ix_trigger_rules_sponsor_topic", table_name="trigger_rules")
    op.drop_table("trigger_rules")
