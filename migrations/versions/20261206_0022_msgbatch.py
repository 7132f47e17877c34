"""messages.send_batch: the provider request a queued message was claimed into

Revision ID: 0022_msgbatch
Revises: 0022_counts
Create Date: 2026-12-06

The message-sender claims the messages of one provider batch request (Resend
``/emails/batch``) under a key, committed before the request; the key is the
request's idempotency key. A claimed message still ``queued`` (a crash, a
retry) is sent again with exactly the members of its batch, found through the
partial index, which holds only queued messages and so stays small.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_msgbatch"
down_revision: str | Sequence[str] | None = "0022_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("send_batch", sa.String(64), nullable=True))
    op.create_index(
        "ix_messages_send_batch",
        "messages",
        ["send_batch"],
        postgresql_where=sa.text("status = 'queued' AND send_batch IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_send_batch", table_name="messages")
    op.drop_column("messages", "send_batch")
