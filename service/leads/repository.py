"""Every SQL statement about leads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete as sa_delete
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import NotFound
from service.models import Lead
from service.stats import counters

# Fields a bulk upsert may set; each is updated only where the row sent it.
_FIELDS = {
    "name": "text",
    "first_name": "text",
    "last_name": "text",
    "company": "text",
    "title": "text",
    "intent_level": "text",
    "intent_score": "smallint",
    "tags": "text[]",
    "follow_up_status": "text",
    "event_id": "text",
    "attributes": "jsonb",
}
_RECORD = ", ".join(["email text", "raw jsonb", *(f"{k} {v}" for k, v in _FIELDS.items())])
_UPDATES = ",\n    ".join(
    f"{k} = CASE WHEN i.raw ? '{k}' THEN i.{k} ELSE l.{k} END" for k in _FIELDS
)
_DEFAULTS = {"tags": "'{}'::text[]", "follow_up_status": "'new'", "attributes": "'{}'::jsonb"}
_INSERT_VALUES = ", ".join(
    f"coalesce(i.{k}, {_DEFAULTS[k]})" if k in _DEFAULTS else f"i.{k}" for k in _FIELDS
)

# One statement: update the leads that exist, insert the others.
_UPSERT = text(f"""
WITH input AS (
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({_RECORD})
), updated AS (
    UPDATE leads l SET
    {_UPDATES},
    updated_at = now()
    FROM input i
    WHERE l.sponsor_id = :sponsor_id AND l.email = i.email
    RETURNING l.email
), inserted AS (
    INSERT INTO leads (sponsor_id, email, {", ".join(_FIELDS)})
    SELECT :sponsor_id, i.email, {_INSERT_VALUES}
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM updated u WHERE u.email = i.email)
    ON CONFLICT (sponsor_id, email) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM updated) AS updated
""")  # noqa: S608 - every interpolated name comes from _FIELDS, never from input


async def upsert_many(
    session: AsyncSession, sponsor_id: str, leads: list[dict[str, Any]]
) -> tuple[int, int]:
    """Insert or update leads by (sponsor, email); returns (inserted, updated)."""
    if not leads:
        return 0, 0
    rows = [{**lead, "raw": lead} for lead in leads]
    result = (
        await session.execute(
            _UPSERT, {"rows": orjson.dumps(rows).decode(), "sponsor_id": sponsor_id}
        )
    ).one()
    return int(result.inserted), int(result.updated)


# ---------------------------------------------------------------- CSV import

_START_IMPORT = text(
    "CREATE TEMP TABLE IF NOT EXISTS lead_import_emails "
    "(email text PRIMARY KEY, line integer NOT NULL) ON COMMIT DROP"
)
_CLAIM = text("""
INSERT INTO lead_import_emails (email, line)
SELECT email, line FROM unnest(CAST(:emails AS text[]), CAST(:lines AS integer[]))
    WITH ORDINALITY AS v(email, line, n)
ORDER BY n
ON CONFLICT (email) DO NOTHING
RETURNING line
""")
_FIRST_LINES = text(
    "SELECT email, line FROM lead_import_emails WHERE email = ANY(CAST(:emails AS text[]))"
)


async def start_import(session: AsyncSession) -> None:
    """A temporary table of the addresses seen in this upload (gone at commit)."""
    await session.execute(_START_IMPORT)


async def claim_import_emails(
    session: AsyncSession, rows: list[tuple[str, int]]
) -> tuple[set[int], dict[str, int]]:
    """Record (email, line) pairs; returns the lines that came first, and for every
    other row's address the line it was first seen on."""
    if not rows:
        return set(), {}
    emails = [email for email, _ in rows]
    lines = [line for _, line in rows]
    kept = {
        int(line)
        for line in (await session.scalars(_CLAIM, {"emails": emails, "lines": lines})).all()
    }
    duplicates = sorted({email for email, line in rows if line not in kept})
    first: dict[str, int] = {}
    if duplicates:
        result = await session.execute(_FIRST_LINES, {"emails": duplicates})
        first = {row.email: int(row.line) for row in result}
    return kept, first


# ---------------------------------------------------------------- reading and deleting

_LEAD_COLUMNS = (
    "id, email, name, first_name, last_name, company, title, intent_level, intent_score, "
    "tags, follow_up_status, event_id, attributes, created_at, updated_at"
)


async def list_page(
    session: AsyncSession,
    sponsor_id: str,
    *,
    limit: int,
    after_id: int | None,
    filters: dict[str, Any],
) -> list[Lead]:
    """The sponsor's leads in id order, keyset-paginated; ``filters`` are equality tests."""
    query = select(Lead).where(Lead.sponsor_id == sponsor_id)
    for name, value in filters.items():
        if name == "tag":
            query = query.where(Lead.tags.contains([value]))
        elif name == "email":
            query = query.where(Lead.email == value)
        else:
            query = query.where(getattr(Lead, name) == value)
    if after_id is not None:
        query = query.where(Lead.id > after_id)
    return list((await session.scalars(query.order_by(Lead.id).limit(limit))).all())


async def get(session: AsyncSession, sponsor_id: str, lead_id: int) -> Lead:
    lead = await session.scalar(
        select(Lead).where(Lead.sponsor_id == sponsor_id, Lead.id == lead_id)
    )
    if lead is None:
        raise NotFound("lead_not_found", f"no lead {lead_id}", "lead_id")
    return lead


# Pending deliveries of a deleted lead are cancelled (history of sent ones stays),
# with the campaign counters moved in the same statement.
_CANCEL_PENDING = text(f"""
WITH moved AS (
    UPDATE campaign_deliveries d SET status = 'cancelled'
    WHERE d.lead_id = ANY(CAST(:lead_ids AS bigint[])) AND d.status = 'pending'
      AND d.campaign_id IN (SELECT id FROM campaigns WHERE sponsor_id = :sponsor_id)
    RETURNING d.campaign_id, {counters.shard_sql("d.batch_no")} AS shard
)
INSERT INTO campaign_stats (campaign_id, shard, pending, cancelled)
SELECT campaign_id, shard, -count(*), count(*) FROM moved GROUP BY campaign_id, shard
ON CONFLICT (campaign_id, shard) DO UPDATE SET
    pending = campaign_stats.pending + EXCLUDED.pending,
    cancelled = campaign_stats.cancelled + EXCLUDED.cancelled
""")  # noqa: S608 - the shard formula is a constant


async def cancel_pending(session: AsyncSession, sponsor_id: str, lead_ids: list[int]) -> None:
    if lead_ids:
        await session.execute(_CANCEL_PENDING, {"lead_ids": lead_ids, "sponsor_id": sponsor_id})


async def delete(session: AsyncSession, sponsor_id: str, lead_id: int) -> None:
    """Delete the lead and cancel its pending deliveries; sent history stays."""
    deleted = await session.scalar(
        sa_delete(Lead).where(Lead.sponsor_id == sponsor_id, Lead.id == lead_id).returning(Lead.id)
    )
    if deleted is None:
        raise NotFound("lead_not_found", f"no lead {lead_id}", "lead_id")
    await cancel_pending(session, sponsor_id, [lead_id])


# ---------------------------------------------------------------- lead sync (leads.v1)

_SYNC_FIELDS = (
    "name",
    "first_name",
    "last_name",
    "company",
    "title",
    "intent_level",
    "intent_score",
    "tags",
    "follow_up_status",
    "event_id",
    "attributes",
)
_SYNC_UPSERT = text(f"""
INSERT INTO leads (sponsor_id, email, {", ".join(_SYNC_FIELDS)}, source_updated_at)
SELECT CAST(:sponsor_id AS text), CAST(:email AS text), CAST(:name AS text),
       CAST(:first_name AS text), CAST(:last_name AS text), CAST(:company AS text),
       CAST(:title AS text), CAST(:intent_level AS text), CAST(:intent_score AS smallint),
       CAST(:tags AS text[]), CAST(:follow_up_status AS text), CAST(:event_id AS text),
       CAST(:attributes AS jsonb), CAST(:updated_at AS timestamptz)
WHERE EXISTS (SELECT 1 FROM sponsors WHERE id = :sponsor_id)
  AND NOT EXISTS (
    SELECT 1 FROM lead_tombstones t
    WHERE t.sponsor_id = :sponsor_id AND t.email = :email AND t.deleted_at >= :updated_at)
ON CONFLICT (sponsor_id, email) DO UPDATE SET
    {", ".join(f"{k} = EXCLUDED.{k}" for k in _SYNC_FIELDS)},
    source_updated_at = EXCLUDED.source_updated_at,
    updated_at = now()
WHERE leads.source_updated_at IS NULL OR leads.source_updated_at < EXCLUDED.source_updated_at
RETURNING id
""")  # noqa: S608 - column names are constants
_TOMBSTONE = text("""
INSERT INTO lead_tombstones (sponsor_id, email, deleted_at)
VALUES (:sponsor_id, :email, :updated_at)
ON CONFLICT (sponsor_id, email) DO UPDATE
SET deleted_at = greatest(lead_tombstones.deleted_at, EXCLUDED.deleted_at)
""")
_SYNC_DELETE = text("""
DELETE FROM leads
WHERE sponsor_id = :sponsor_id AND email = :email
  AND (source_updated_at IS NULL OR source_updated_at <= :updated_at)
RETURNING id
""")


async def sync_upsert(
    session: AsyncSession, sponsor_id: str, values: dict[str, Any], updated_at: datetime
) -> bool:
    """Apply upstream's lead unless a newer state (or a newer deletion) is stored."""
    params = {
        **{k: values.get(k) for k in _SYNC_FIELDS},
        "tags": list(values.get("tags") or []),
        "attributes": orjson.dumps(values.get("attributes") or {}).decode(),
        "sponsor_id": sponsor_id,
        "email": values["email"],
        "updated_at": updated_at,
    }
    return (await session.scalar(_SYNC_UPSERT, params)) is not None


async def sync_delete(
    session: AsyncSession, sponsor_id: str, email: str, updated_at: datetime
) -> bool:
    """Delete the lead unless it changed after ``updated_at``; remember the deletion."""
    params = {"sponsor_id": sponsor_id, "email": email, "updated_at": updated_at}
    await session.execute(_TOMBSTONE, params)
    lead_id = await session.scalar(_SYNC_DELETE, params)
    if lead_id is None:
        return False
    await cancel_pending(session, sponsor_id, [int(lead_id)])
    return True
