"""leads: five indexes no longer needed are dropped, so a bulk import maintains seven, not twelve

Revision ID: 0025_importer
Revises: 0025_msgretention
Create Date: 2026-12-06

Every lead written maintains every index of ``leads``; at a million rows an
import spent most of its database time there. These five served custom
audience counts, which the in-memory audience index now answers
(``service/audiences/live.py``), or nothing a plan still picks:

- ``(sponsor_id, intent_score)``: range leaves of custom filters;
- ``(sponsor_id, intent_level)``: presets are counted from ``lead_tallies``;
  the list filtered by level is read in id order (a level is a third of the
  leads, not a needle), and its plans did not use the index;
- the trigram indexes on ``company`` and ``title`` (0017): ``ilike`` leaves;
- the GIN index on ``attributes``: attribute leaves.

What still counts custom audiences in SQL (a campaign's creation, the
planner, a preview while the index is being built) reads the sponsor's leads
through ``(sponsor_id, …)`` and filters them, as it already did for any broad
audience. Kept: the primary key, ``(sponsor_id, email)``, ``(sponsor_id, id)``
(keyset pages), the list filters' ``(sponsor_id, follow_up_status)``,
``(sponsor_id, event_id)`` and the GIN index on ``tags``, whose values can
be rare, and ``(sponsor_id, created_at)``, which the digests read a day of
leads through.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025_importer"
down_revision: str | Sequence[str] | None = "0025_msgretention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BTREES = {
    "ix_leads_sponsor_score": ["sponsor_id", "intent_score"],
    "ix_leads_sponsor_intent": ["sponsor_id", "intent_level"],
}
_GINS = {
    "ix_leads_company_trgm": ("company", "gin_trgm_ops"),
    "ix_leads_title_trgm": ("title", "gin_trgm_ops"),
    "ix_leads_attributes": ("attributes", "jsonb_path_ops"),
}


def upgrade() -> None:
    for name in (*_BTREES, *_GINS):
        op.drop_index(name, table_name="leads")


def downgrade() -> None:
    for name, columns in _BTREES.items():
        op.create_index(name, "leads", columns)
    for name, (column, ops) in _GINS.items():
        op.create_index(
            name, "leads", [column], postgresql_using="gin", postgresql_ops={column: ops}
        )
