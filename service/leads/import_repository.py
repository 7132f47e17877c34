"""The CSV import's statements: staging a chunk, and upserting it while finding
the addresses an earlier chunk of the same upload brought.

Each chunk's rows are copied into the staging table ``lead_import_rows`` (one
row per address within the chunk, see ``repository.staged_record``). One
statement then upserts them and records, in ``lead_import_leads``, which lead
each staged line wrote. A staged address whose lead is already in that table
was written by an earlier chunk of this upload: a duplicate, not an update,
reported with the line that wrote it. The table is keyed by lead id, which
grows as the import inserts, so keeping it costs an append, not a probe into
an index of every address seen so far.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.leads.repository import (
    EXISTING_PROBE,
    INSERT_VALUES,
    SET_SENT_FIELDS,
    STAGED_COLUMNS,
    STAGED_FIELDS,
    asyncpg_connection,
    clear_stage,
)

_START = text(
    "CREATE TEMP TABLE IF NOT EXISTS lead_import_leads "
    "(lead_id bigint PRIMARY KEY, line integer NOT NULL) ON COMMIT DROP"
)
# A second upload in the same transaction starts from nothing again.
_CLEAR = text("TRUNCATE lead_import_leads")

# As ``repository._upsert``, and: existing leads this upload wrote are left
# alone and returned as duplicates; every lead written is recorded with its line.
_UPSERT = text(f"""
WITH existing AS MATERIALIZED (
    SELECT i.*, m.id AS lead_id, c.line AS first_line
    FROM lead_import_rows AS i
    CROSS JOIN LATERAL (
        {EXISTING_PROBE}
    ) AS m
    LEFT JOIN lead_import_leads AS c ON c.lead_id = m.id
), updated AS (
    UPDATE leads l SET
    {SET_SENT_FIELDS},
    updated_at = now()
    FROM existing i
    WHERE l.id = ANY(ARRAY(SELECT lead_id FROM existing WHERE first_line IS NULL))
      AND l.id = i.lead_id AND i.first_line IS NULL
    RETURNING l.id, i.line
), inserted AS (
    INSERT INTO leads (sponsor_id, email, {", ".join(STAGED_FIELDS)})
    SELECT :sponsor_id, i.email, {INSERT_VALUES}
    FROM lead_import_rows AS i
    WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.email = i.email)
    ON CONFLICT (sponsor_id, email) DO NOTHING
    RETURNING id, email
), recorded AS (
    INSERT INTO lead_import_leads (lead_id, line)
    SELECT id, line FROM updated
    UNION ALL
    SELECT n.id, i.line FROM inserted AS n JOIN lead_import_rows AS i ON i.email = n.email
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM updated) AS updated,
       ARRAY(SELECT line FROM existing WHERE first_line IS NOT NULL ORDER BY line) AS lines,
       ARRAY(SELECT first_line FROM existing WHERE first_line IS NOT NULL ORDER BY line) AS firsts
""")  # noqa: S608 - every interpolated name comes from the repository's constants


@dataclass(frozen=True, slots=True)
class Upserted:
    """What one chunk did: leads inserted and updated, and its duplicates of
    earlier chunks as (line, line that wrote the address first)."""

    inserted: int
    updated: int
    duplicates: list[tuple[int, int]]


async def start(session: AsyncSession) -> None:
    """The upload's record of the leads it wrote (a temporary table, gone at commit)."""
    await session.execute(_START)
    await session.execute(_CLEAR)


async def stage(session: AsyncSession, staged: bytes) -> None:
    """Replace the staging table's rows with ``staged``: records as COPY's CSV, an empty
    field NULL, tags an array literal, attributes JSON text."""
    await clear_stage(session)
    driver = await asyncpg_connection(session)
    # A view: bytes would be taken for a path.
    view = memoryview(staged)
    await driver.copy_to_table(
        "lead_import_rows", source=view, columns=STAGED_COLUMNS, format="csv"
    )


async def upsert(session: AsyncSession, sponsor_id: str) -> Upserted:
    """Upsert the staged rows (distinct addresses) for this upload (see the module)."""
    row = (await session.execute(_UPSERT, {"sponsor_id": sponsor_id})).one()
    return Upserted(
        int(row.inserted), int(row.updated), list(zip(row.lines, row.firsts, strict=True))
    )
