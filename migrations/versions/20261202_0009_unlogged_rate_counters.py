"""rate-limit counters unlogged: a count per API request costs no WAL flush

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

The counters only matter for the current minute; after a crash PostgreSQL
empties an unlogged table, which forgives that minute's requests.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE api_rate_counters SET UNLOGGED")


def downgrade() -> None:
    op.execute("ALTER TABLE api_rate_counters SET LOGGED")
