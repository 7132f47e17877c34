"""ab: A/B tests of campaigns (variants, the test's settings, the winner and why)

Revision ID: 0022_ab
Revises: 0022_fastlane
Create Date: 2026-12-06

``campaigns.ab_test`` holds the variants and the test's settings as the API
accepted them (NULL: not an A/B campaign); ``ab_winner`` the chosen variant's
index once decided, ``ab_decision`` what was decided and why, ``ab_decide_at``
when the ``ab.decide`` timer chooses. ``campaign_deliveries.variant`` is the
variant a test-share row was sent; NULL for the rest, sent the winner. Adding
a column to the partitioned parent adds it to every partition (migration 0015).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022_ab"
down_revision: str | Sequence[str] | None = "0022_fastlane"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("ab_test", postgresql.JSONB))
    op.add_column("campaigns", sa.Column("ab_winner", sa.SmallInteger))
    op.add_column("campaigns", sa.Column("ab_decision", postgresql.JSONB))
    op.add_column("campaigns", sa.Column("ab_decide_at", sa.DateTime(timezone=True)))
    op.add_column("campaign_deliveries", sa.Column("variant", sa.SmallInteger))


def downgrade() -> None:
    op.drop_column("campaign_deliveries", "variant")
    for column in ("ab_decide_at", "ab_decision", "ab_winner", "ab_test"):
        op.drop_column("campaigns", column)
