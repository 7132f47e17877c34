"""remember the tokens of signed webhooks, to refuse a replay

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

Mailgun signs a webhook over a timestamp and a one-time token; a request
whose token was seen before is a replay. Tokens are kept only as long as
their timestamp would still be accepted (``MAILGUN_WEBHOOK_MAX_AGE_SECONDS``),
so the table stays small; ``seen_at`` is indexed for that clean-up.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_tokens",
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("provider", "token"),
    )
    op.create_index("ix_webhook_tokens_seen_at", "webhook_tokens", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_tokens_seen_at", table_name="webhook_tokens")
    op.drop_table("webhook_tokens")
