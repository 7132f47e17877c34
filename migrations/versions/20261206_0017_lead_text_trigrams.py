"""trigram indexes on leads.company and leads.title, for ``ilike`` audience filters

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

An ``ilike`` leaf (``company ilike 'acme%'``) could use no index: its count
read every lead of the sponsor. A trigram GIN index answers the pattern with
a bitmap of the few matching rows, so a narrow text filter reads only their
pages. ``pg_trgm`` ships with PostgreSQL's contrib modules.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {"ix_leads_company_trgm": "company", "ix_leads_title_trgm": "title"}


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, column in _INDEXES.items():
        op.create_index(
            name,
            "leads",
            [column],
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="leads")
