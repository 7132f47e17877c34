"""msgtrack: transactional messages get events, first times and their links

Revision ID: 0022_msgtrack
Revises: 0021
Create Date: 2026-12-06

Messages stay their own ledger beside campaign deliveries: ``message_events``
logs what happened to a message after sending (our pixel and redirect,
provider webhooks), and the message row keeps the first times its status
follows (``delivered_at`` … ``complained_at``) and the targets of its tracked
links as sent (``links``), which the click redirect reads.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022_msgtrack"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FIRST_TIMES = ("delivered_at", "opened_at", "clicked_at", "bounced_at", "complained_at")


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column(
            "links",
            postgresql.JSONB,
            nullable=False,
            server_default=sa.text("'[]'"),
        ),
    )
    for name in _FIRST_TIMES:
        op.add_column("messages", sa.Column(name, sa.DateTime(timezone=True)))
    op.create_index("ix_messages_type_created", "messages", ["type_id", "created_at"])
    op.create_table(
        "message_events",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column(
            "message_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("link_position", sa.Integer),
        sa.Column("is_machine", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ip_hash", sa.LargeBinary),
        sa.Column("payload", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("ix_message_events_message", "message_events", ["message_id", "occurred_at"])
    op.create_index("ix_message_events_type_time", "message_events", ["type_id", "occurred_at"])


def downgrade() -> None:
    op.drop_table("message_events")
    op.drop_index("ix_messages_type_created", table_name="messages")
    for name in _FIRST_TIMES:
        op.drop_column("messages", name)
    op.drop_column("messages", "links")
