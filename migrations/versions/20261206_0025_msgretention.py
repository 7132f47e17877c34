"""retention of messages, trigger firings and idempotency keys: indexes by age

Revision ID: 0025_msgretention
Revises: 0024_digests2
Create Date: 2026-12-06

The retention upkeep deletes these rows by age; an index on the creation time
lets it reach the old rows without scanning each table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025_msgretention"
down_revision: str | Sequence[str] | None = "0024_digests2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_messages_created": "messages",
    "ix_trigger_firings_created": "trigger_firings",
    "ix_message_idempotency_keys_created": "message_idempotency_keys",
}


def upgrade() -> None:
    for name, table in INDEXES.items():
        op.create_index(name, table, ["created_at"])


def downgrade() -> None:
    for name, table in INDEXES.items():
        op.drop_index(name, table_name=table)
