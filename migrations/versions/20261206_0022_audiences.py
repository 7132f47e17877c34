"""audiences: leads are checked, tallied and gated once per statement, not per row

Revision ID: 0022_audiences
Revises: 0022_digests
Create Date: 2026-12-06

``lead_tallies_track`` (migrations 0008 and 0010) asked ``address_suppressed``
once for every lead a statement wrote: a function call and an index probe per
row, the larger part of a bulk import's trigger time. It now finds the
suppressed addresses among a statement's leads with one join of its
transition tables with ``suppressions``, which the planner runs as probes for a
few rows and as a hash join for an import's chunk. The tallies it writes, the
gates it passes and the order it does both in are those of 0010, so the
guarantees documented there hold unchanged.

A gate is now a 64-bit hash of (sponsor, email) inserted with a plain INSERT:
no live gate row is ever left (each transaction deletes its own), so the
insert either succeeds at once or waits for the transaction holding the same
gate, as before. Two addresses with the same hash only wait for each other.

The foreign key from ``leads`` to ``sponsors`` checked each row with its own
query. The same trigger now checks a statement's distinct sponsors at once
(``check_lead_sponsors``), locking them ``FOR KEY SHARE`` as the key did, so a
sponsor's deletion still waits for the leads being written; a trigger on
``sponsors`` deletes a deleted sponsor's leads, as ``ON DELETE CASCADE`` did.
The invariant: every lead's sponsor exists. Sponsor ids are never updated (no
code does; the key used to refuse it for a sponsor with leads).
"""

from collections.abc import Sequence

from alembic import context, op

revision: str = "0022_audiences"
down_revision: str | Sequence[str] | None = "0022_digests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tally(rows: str) -> str:
    """The tally rows of ``rows`` (a query of sponsor_id, intent_level,
    follow_up_status, email and n, the lead's sign), one per side."""
    return f"""
        WITH changed AS MATERIALIZED (SELECT * FROM ({rows}) AS r WHERE email <> ''),
        suppressed AS (
            SELECT DISTINCT c.sponsor_id, c.email
            FROM changed c JOIN suppressions s
              ON s.email = c.email AND (s.sponsor_id = c.sponsor_id OR s.sponsor_id IS NULL)
        )
        INSERT INTO lead_tallies
            (sponsor_id, intent_level, follow_up_status, suppressed, leads)
        SELECT c.sponsor_id, c.intent_level, c.follow_up_status, s.email IS NOT NULL, sum(c.n)
        FROM changed c
        LEFT JOIN suppressed s ON s.sponsor_id = c.sponsor_id AND s.email = c.email
        GROUP BY 1, 2, 3, 4 HAVING sum(c.n) <> 0;"""  # noqa: S608 - rows is one of ours


_ADDED = "SELECT sponsor_id, intent_level, follow_up_status, email, 1 AS n FROM added"
_REMOVED = "SELECT sponsor_id, intent_level, follow_up_status, email, -1 AS n FROM removed"

_GATES = """
CREATE OR REPLACE FUNCTION pass_lead_gates(sponsors text[], emails text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    passed tid[];
BEGIN
    -- No live row is ever left behind (each transaction deletes its own), so
    -- the insert either succeeds or waits for the transaction holding the gate.
    WITH gates AS (
        INSERT INTO lead_gates (gate)
        SELECT DISTINCT hashtextextended(s || ' ' || e, 0)
        FROM unnest(sponsors, emails) AS p(s, e) WHERE e <> ''
        ORDER BY 1
        RETURNING ctid
    )
    SELECT array_agg(ctid) INTO passed FROM gates;
    DELETE FROM lead_gates WHERE ctid = ANY (passed);
END
$$
"""

_SPONSORS = (
    """
CREATE FUNCTION check_lead_sponsors(wanted text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    found integer;
BEGIN
    SELECT count(*) INTO found
    FROM (SELECT 1 FROM sponsors WHERE id = ANY (wanted) FOR KEY SHARE) AS known;
    IF found < coalesce(cardinality(wanted), 0) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a lead refers to a sponsor that does not exist',
            TABLE = 'leads', CONSTRAINT = 'leads_sponsor_id_fkey';
    END IF;
END
$$
""",
    """
CREATE FUNCTION sponsor_leads_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM leads WHERE sponsor_id IN (SELECT id FROM removed);
    RETURN NULL;
END
$$
""",
)

_TRACK = f"""
CREATE OR REPLACE FUNCTION lead_tallies_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM check_lead_sponsors(array_agg(DISTINCT sponsor_id)) FROM added;
        PERFORM pass_lead_gates(array_agg(sponsor_id), array_agg(email)) FROM added;
        {_tally(_ADDED)}
    ELSIF TG_OP = 'DELETE' THEN
        {_tally(_REMOVED)}
    ELSE
        PERFORM check_lead_sponsors(array_agg(DISTINCT a.sponsor_id))
        FROM added a JOIN removed r USING (id) WHERE a.sponsor_id <> r.sponsor_id;
        PERFORM pass_lead_gates(array_agg(a.sponsor_id), array_agg(a.email))
        FROM added a JOIN removed r USING (id) WHERE a.email <> r.email;
        {_tally(f"{_ADDED} UNION ALL {_REMOVED}")}
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute("DROP TABLE lead_gates")
    op.execute("CREATE UNLOGGED TABLE lead_gates (gate bigint PRIMARY KEY)")
    op.execute(_GATES)
    for function in _SPONSORS:
        op.execute(function)
    op.execute(_TRACK)
    op.execute(
        "CREATE TRIGGER sponsors_delete_leads AFTER DELETE ON sponsors "
        "REFERENCING OLD TABLE AS removed "
        "FOR EACH STATEMENT EXECUTE FUNCTION sponsor_leads_delete()"
    )
    op.drop_constraint("leads_sponsor_id_fkey", "leads", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        "leads_sponsor_id_fkey", "leads", "sponsors", ["sponsor_id"], ["id"], ondelete="CASCADE"
    )
    op.execute("DROP TRIGGER sponsors_delete_leads ON sponsors")
    # Migration 0010's table and functions.
    op.execute("DROP TABLE lead_gates")
    op.execute(
        "CREATE UNLOGGED TABLE lead_gates ("
        "sponsor_id varchar(64) NOT NULL, email varchar(320) NOT NULL, "
        "PRIMARY KEY (sponsor_id, email))"
    )
    functions = context.script.get_revision("0010").module._FUNCTIONS
    for name in ("pass_lead_gates", "lead_tallies_track"):
        function = next(f for f in functions if f"FUNCTION {name}(" in f)
        op.execute(function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.execute("DROP FUNCTION sponsor_leads_delete()")
    op.execute("DROP FUNCTION check_lead_sponsors(text[])")
