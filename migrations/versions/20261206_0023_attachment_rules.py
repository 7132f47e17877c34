"""message_types.attachment_rules: what a type's messages may attach

Revision ID: 0023_attachment_rules
Revises: 0022_msgbatch
Create Date: 2026-12-06

NULL (every type made before) keeps the provider's limits alone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023_attachment_rules"
down_revision: str | Sequence[str] | None = "0022_msgbatch"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "message_types",
        sa.Column("attachment_rules", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("message_types", "attachment_rules")
