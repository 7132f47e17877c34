"""lead tallies: exact live counts of preset audiences without reading the leads

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Every statement that inserts, updates or deletes leads appends, through a
statement-level trigger, how many leads with an email it added or removed per
(sponsor, intent level, follow-up status). The tallies are rows of the same
transactions as the leads, so any snapshot sees both alike: the sum is the
exact count. Readers compact a sponsor's rows from time to time
(``service/audiences/repository.py``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRACK = """
CREATE FUNCTION lead_tallies_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO lead_tallies (sponsor_id, intent_level, follow_up_status, leads)
        SELECT sponsor_id, intent_level, follow_up_status, count(*)
        FROM added WHERE email <> '' GROUP BY 1, 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO lead_tallies (sponsor_id, intent_level, follow_up_status, leads)
        SELECT sponsor_id, intent_level, follow_up_status, -count(*)
        FROM removed WHERE email <> '' GROUP BY 1, 2, 3;
    ELSE
        INSERT INTO lead_tallies (sponsor_id, intent_level, follow_up_status, leads)
        SELECT sponsor_id, intent_level, follow_up_status, sum(n)
        FROM (
            SELECT sponsor_id, intent_level, follow_up_status, 1 AS n
            FROM added WHERE email <> ''
            UNION ALL
            SELECT sponsor_id, intent_level, follow_up_status, -1
            FROM removed WHERE email <> ''
        ) AS changed
        GROUP BY 1, 2, 3 HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$
"""

_TRIGGERS = {
    "insert": "AFTER INSERT ON leads REFERENCING NEW TABLE AS added",
    "update": "AFTER UPDATE ON leads REFERENCING OLD TABLE AS removed NEW TABLE AS added",
    "delete": "AFTER DELETE ON leads REFERENCING OLD TABLE AS removed",
}


def upgrade() -> None:
    op.create_table(
        "lead_tallies",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("sponsor_id", sa.String(length=64), nullable=False),
        sa.Column("intent_level", sa.String(length=10)),
        sa.Column("follow_up_status", sa.String(length=40), nullable=False),
        sa.Column("leads", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_lead_tallies_sponsor", "lead_tallies", ["sponsor_id"])
    op.execute(_TRACK)
    for event, clause in _TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER leads_tally_{event} {clause} "
            "FOR EACH STATEMENT EXECUTE FUNCTION lead_tallies_track()"
        )
    # Created after the triggers, in the same transaction: nothing is counted twice.
    op.execute(
        "INSERT INTO lead_tallies (sponsor_id, intent_level, follow_up_status, leads) "
        "SELECT sponsor_id, intent_level, follow_up_status, count(*) FROM leads "
        "WHERE email <> '' GROUP BY 1, 2, 3"
    )
    # Suppressed addresses are subtracted by probing (sponsor, email): with the
    # preset columns in the index, those probes never read the table.
    op.drop_constraint("uq_leads_sponsor_email", "leads", type_="unique")
    op.execute(
        "ALTER TABLE leads ADD CONSTRAINT uq_leads_sponsor_email "
        "UNIQUE (sponsor_id, email) INCLUDE (intent_level, follow_up_status)"
    )


def downgrade() -> None:
    op.drop_constraint("uq_leads_sponsor_email", "leads", type_="unique")
    op.create_unique_constraint("uq_leads_sponsor_email", "leads", ["sponsor_id", "email"])
    for event in _TRIGGERS:
        op.execute(f"DROP TRIGGER leads_tally_{event} ON leads")
    op.execute("DROP FUNCTION lead_tallies_track()")
    op.drop_table("lead_tallies")
