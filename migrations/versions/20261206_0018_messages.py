"""transactional messages: message types, messages, idempotency keys

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06

A message type is a sponsor's template for one kind of one-to-one message;
each message sent through ``POST …/messages`` is a row whose status moves
once out of ``queued``. An ``Idempotency-Key`` is kept with its request's
body hash and the ids it got, and counts for 24 hours.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "message_types",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "sponsor_id",
            sa.String(64),
            sa.ForeignKey("sponsors.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message_body", sa.Text()),
        sa.Column("html_body", sa.Text()),
        sa.Column("text_body", sa.Text()),
        sa.Column("variables", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'")),
        sa.Column("from_name", sa.String(200)),
        sa.Column("reply_to", sa.String(320)),
        sa.Column(
            "default_recipients",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("sponsor_id", "key", name="uq_message_types_sponsor_key"),
    )
    op.create_table(
        "messages",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "sponsor_id",
            sa.String(64),
            sa.ForeignKey("sponsors.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "type_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("message_types.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type_key", sa.String(200), nullable=False),
        sa.Column("to_email", sa.String(320), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("reply_to", sa.String(320)),
        sa.Column(
            "attachments", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'")
        ),
        sa.Column("tags", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'queued'")),
        sa.Column("provider_message_id", sa.String(200)),
        sa.Column("last_error", sa.Text()),
        _timestamp("created_at"),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        _timestamp("updated_at"),
    )
    op.create_index("ix_messages_sponsor_created", "messages", ["sponsor_id", "created_at", "id"])
    op.create_table(
        "message_idempotency_keys",
        sa.Column(
            "sponsor_id",
            sa.String(64),
            sa.ForeignKey("sponsors.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("body_hash", sa.LargeBinary(), nullable=False),
        sa.Column("message_ids", postgresql.ARRAY(postgresql.UUID(as_uuid=True)), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("sponsor_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("message_idempotency_keys")
    op.drop_index("ix_messages_sponsor_created", table_name="messages")
    op.drop_table("messages")
    op.drop_table("message_types")
