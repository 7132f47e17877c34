"""suppressed leads tallied apart: a preset's count is one sum, whatever the suppressions

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

``lead_tallies`` gains ``suppressed``: whether the address of the leads counted
is suppressed for their sponsor or globally. The triggers on ``leads`` look it
up for each lead they count; new triggers on ``suppressions`` move the leads an
added or lifted suppression concerns from one side to the other.

Two transactions, one writing a lead and one a suppression for the same
address, cannot both miss each other: each first inserts (and deletes again)
the pair (sponsor, email) in ``lead_gates``. The unique index makes the second
one wait until the first commits, and its next statement sees the first one's
rows. Only writes of the same address ever wait. The suppression trigger also
locks the existing leads it reads (``FOR SHARE``), so an update of one of them
waits for it, or it for the update.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTIONS = (
    """
CREATE FUNCTION address_suppressed(sponsor text, address text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM suppressions
        WHERE email = address AND (sponsor_id = sponsor OR sponsor_id IS NULL)
    )
$$
""",
    """
-- Waits for any running transaction that passed one of these (sponsor, email)
-- gates, and makes any later one wait for this transaction.
CREATE FUNCTION pass_lead_gates(sponsors text[], emails text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    passed tid[];
BEGIN
    WITH gates AS (
        INSERT INTO lead_gates (sponsor_id, email)
        SELECT DISTINCT s, e FROM unnest(sponsors, emails) AS p(s, e) WHERE e <> ''
        ORDER BY 1, 2
        ON CONFLICT DO NOTHING
        RETURNING ctid
    )
    SELECT array_agg(ctid) INTO passed FROM gates;
    DELETE FROM lead_gates WHERE ctid = ANY (passed);
END
$$
""",
    """
CREATE OR REPLACE FUNCTION lead_tallies_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pass_lead_gates(array_agg(sponsor_id), array_agg(email)) FROM added;
        INSERT INTO lead_tallies
            (sponsor_id, intent_level, follow_up_status, suppressed, leads)
        SELECT sponsor_id, intent_level, follow_up_status,
               address_suppressed(sponsor_id, email), count(*)
        FROM added WHERE email <> '' GROUP BY 1, 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO lead_tallies
            (sponsor_id, intent_level, follow_up_status, suppressed, leads)
        SELECT sponsor_id, intent_level, follow_up_status,
               address_suppressed(sponsor_id, email), -count(*)
        FROM removed WHERE email <> '' GROUP BY 1, 2, 3, 4;
    ELSE
        PERFORM pass_lead_gates(array_agg(a.sponsor_id), array_agg(a.email))
        FROM added a JOIN removed r USING (id) WHERE a.email <> r.email;
        INSERT INTO lead_tallies
            (sponsor_id, intent_level, follow_up_status, suppressed, leads)
        SELECT sponsor_id, intent_level, follow_up_status,
               address_suppressed(sponsor_id, email), sum(n)
        FROM (
            SELECT sponsor_id, intent_level, follow_up_status, email, 1 AS n
            FROM added WHERE email <> ''
            UNION ALL
            SELECT sponsor_id, intent_level, follow_up_status, email, -1
            FROM removed WHERE email <> ''
        ) AS changed
        GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$
""",
    """
CREATE FUNCTION suppression_tallies_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed bigint[];
    sponsors text[];
    emails text[];
    now_suppressed boolean := TG_OP = 'INSERT';
BEGIN
    -- The (sponsor, email) pairs of the changed suppressions; a global one
    -- concerns the address at every sponsor.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(id) INTO changed FROM added;
        SELECT array_agg(p.sponsor_id), array_agg(p.email) INTO sponsors, emails FROM (
            SELECT sponsor_id, email FROM added WHERE sponsor_id IS NOT NULL
            UNION
            SELECT sponsors.id, email FROM added CROSS JOIN sponsors WHERE sponsor_id IS NULL
        ) AS p;
    ELSE
        SELECT array_agg(id) INTO changed FROM removed;
        SELECT array_agg(p.sponsor_id), array_agg(p.email) INTO sponsors, emails FROM (
            SELECT sponsor_id, email FROM removed WHERE sponsor_id IS NOT NULL
            UNION
            SELECT sponsors.id, email FROM removed CROSS JOIN sponsors WHERE sponsor_id IS NULL
        ) AS p;
    END IF;
    PERFORM pass_lead_gates(sponsors, emails);
    PERFORM 1 FROM leads l JOIN unnest(sponsors, emails) AS p(s, e)
        ON l.sponsor_id = p.s AND l.email = p.e
    ORDER BY l.id FOR SHARE OF l;
    -- A lead changes sides unless another suppression, not changed here,
    -- keeps it suppressed.
    INSERT INTO lead_tallies (sponsor_id, intent_level, follow_up_status, suppressed, leads)
    SELECT l.sponsor_id, l.intent_level, l.follow_up_status, side.suppressed, side.n * count(*)
    FROM leads l
    JOIN unnest(sponsors, emails) AS p(s, e) ON l.sponsor_id = p.s AND l.email = p.e
    CROSS JOIN (VALUES (now_suppressed, 1), (NOT now_suppressed, -1)) AS side(suppressed, n)
    WHERE NOT EXISTS (
        SELECT 1 FROM suppressions s
        WHERE s.email = l.email AND (s.sponsor_id = l.sponsor_id OR s.sponsor_id IS NULL)
          AND s.id <> ALL (changed)
    )
    GROUP BY 1, 2, 3, 4, side.n;
    RETURN NULL;
END
$$
""",
)

_SUPPRESSION_TRIGGERS = {
    "insert": "AFTER INSERT ON suppressions REFERENCING NEW TABLE AS added",
    "delete": "AFTER DELETE ON suppressions REFERENCING OLD TABLE AS removed",
}


def upgrade() -> None:
    op.execute(
        "CREATE UNLOGGED TABLE lead_gates ("
        "sponsor_id varchar(64) NOT NULL, email varchar(320) NOT NULL, "
        "PRIMARY KEY (sponsor_id, email))"
    )
    op.add_column(
        "lead_tallies",
        sa.Column("suppressed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    for function in _FUNCTIONS:
        op.execute(function)
    for event, clause in _SUPPRESSION_TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER suppressions_tally_{event} {clause} "
            "FOR EACH STATEMENT EXECUTE FUNCTION suppression_tallies_track()"
        )
    # Recounted after the triggers, in the same transaction, both tables locked.
    op.execute("LOCK TABLE leads, suppressions IN SHARE MODE")
    op.execute("DELETE FROM lead_tallies")
    op.execute(
        "INSERT INTO lead_tallies (sponsor_id, intent_level, follow_up_status, suppressed, leads) "
        "SELECT sponsor_id, intent_level, follow_up_status, "
        "address_suppressed(sponsor_id, email), count(*) "
        "FROM leads WHERE email <> '' GROUP BY 1, 2, 3, 4"
    )
    # Suppressed leads are no longer probed in the (sponsor, email) index.
    op.drop_constraint("uq_leads_sponsor_email", "leads", type_="unique")
    op.create_unique_constraint("uq_leads_sponsor_email", "leads", ["sponsor_id", "email"])


def downgrade() -> None:
    op.drop_constraint("uq_leads_sponsor_email", "leads", type_="unique")
    op.execute(
        "ALTER TABLE leads ADD CONSTRAINT uq_leads_sponsor_email "
        "UNIQUE (sponsor_id, email) INCLUDE (intent_level, follow_up_status)"
    )
    for event in _SUPPRESSION_TRIGGERS:
        op.execute(f"DROP TRIGGER suppressions_tally_{event} ON suppressions")
    # Migration 0008's function, which does not read suppressions. Both sides'
    # rows add up to all the leads with an email, as 0008 counts them.
    track = context.script.get_revision("0008").module._TRACK
    op.execute(track.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.execute("DROP FUNCTION suppression_tallies_track()")
    op.execute("DROP FUNCTION pass_lead_gates(text[], text[])")
    op.execute("DROP FUNCTION address_suppressed(text, text)")
    op.drop_column("lead_tallies", "suppressed")
    op.execute("DROP TABLE lead_gates")
