"""The lead sync's statements for many events at once: set-based, one per kind.

``service.leads.logic.apply_events`` collapses a batch to the newest event of
each kind per (sponsor, email) first, so each statement touches a row once.
Their order keeps the newest-``updated_at``-wins rule of the one-by-one path:
tombstones first, then the upserts (which a tombstone as new blocks), then
the deletions (which spare a lead changed after them).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.leads.repository import SYNC_FIELDS, asyncpg_connection, cancel_pending

_TYPES = {"intent_score": "smallint", "tags": "text[]", "attributes": "jsonb"}
_COLUMNS = ("sponsor_id", "email", "updated_at", *SYNC_FIELDS)
_RECORD = ", ".join(
    ["sponsor_id text", "email text", "updated_at timestamptz"]
    + [f"{k} {_TYPES.get(k, 'text')}" for k in SYNC_FIELDS]
)
_STAGE = text(f"CREATE TEMP TABLE IF NOT EXISTS lead_sync_rows ({_RECORD}) ON COMMIT DROP")
_CLEAR_STAGE = text("TRUNCATE lead_sync_rows")
_UPSERT = text(f"""
WITH applied AS (
    INSERT INTO leads (sponsor_id, email, {", ".join(SYNC_FIELDS)}, source_updated_at)
    SELECT i.sponsor_id, i.email, {", ".join(f"i.{k}" for k in SYNC_FIELDS)}, i.updated_at
    FROM lead_sync_rows i
    WHERE EXISTS (SELECT 1 FROM sponsors s WHERE s.id = i.sponsor_id)
      AND NOT EXISTS (
        SELECT 1 FROM lead_tombstones t
        WHERE t.sponsor_id = i.sponsor_id AND t.email = i.email
          AND t.deleted_at >= i.updated_at)
    ON CONFLICT (sponsor_id, email) DO UPDATE SET
        {", ".join(f"{k} = EXCLUDED.{k}" for k in SYNC_FIELDS)},
        source_updated_at = EXCLUDED.source_updated_at,
        updated_at = now()
    WHERE leads.source_updated_at IS NULL
       OR leads.source_updated_at < EXCLUDED.source_updated_at
    RETURNING 1
)
SELECT count(*) FROM applied
""")  # noqa: S608 - column names are constants
_TOMBSTONES = text("""
INSERT INTO lead_tombstones (sponsor_id, email, deleted_at)
SELECT * FROM unnest(
    CAST(:sponsors AS text[]), CAST(:emails AS text[]), CAST(:times AS timestamptz[]))
ON CONFLICT (sponsor_id, email) DO UPDATE
SET deleted_at = greatest(lead_tombstones.deleted_at, EXCLUDED.deleted_at)
""")
_DELETE = text("""
DELETE FROM leads l
USING unnest(
    CAST(:sponsors AS text[]), CAST(:emails AS text[]), CAST(:times AS timestamptz[])
) AS d(sponsor_id, email, deleted_at)
WHERE l.sponsor_id = d.sponsor_id AND l.email = d.email
  AND (l.source_updated_at IS NULL OR l.source_updated_at <= d.deleted_at)
RETURNING l.sponsor_id, l.id
""")

Key = tuple[str, str]  # (sponsor, normalized email)


def _record(key: Key, updated_at: datetime, values: dict[str, Any]) -> tuple[Any, ...]:
    return (
        *key,
        updated_at,
        *(values.get(k) for k in SYNC_FIELDS[:7]),
        list(values.get("tags") or []),
        *(values.get(k) for k in SYNC_FIELDS[8:10]),
        orjson.dumps(values.get("attributes") or {}).decode(),
    )


def _arrays(rows: dict[Key, datetime]) -> dict[str, list[Any]]:
    return {
        "sponsors": [sponsor for sponsor, _ in rows],
        "emails": [email for _, email in rows],
        "times": list(rows.values()),
    }


async def tombstone_many(session: AsyncSession, deletions: dict[Key, datetime]) -> None:
    """Remember each deletion (the newest per address), before any upsert is applied."""
    if deletions:
        await session.execute(_TOMBSTONES, _arrays(deletions))


async def upsert_many(
    session: AsyncSession, upserts: dict[Key, tuple[datetime, dict[str, Any]]]
) -> int:
    """Apply each address's newest upsert unless a newer state or deletion is stored;
    returns how many were applied."""
    if not upserts:
        return 0
    await session.execute(_STAGE)
    await session.execute(_CLEAR_STAGE)
    records = [_record(key, at, values) for key, (at, values) in upserts.items()]
    driver = await asyncpg_connection(session)
    await driver.copy_records_to_table("lead_sync_rows", records=records, columns=_COLUMNS)
    return int(await session.scalar(_UPSERT) or 0)


async def delete_many(session: AsyncSession, deletions: dict[Key, datetime]) -> int:
    """Delete each lead not changed after its deletion, cancelling its pending sends;
    returns how many were deleted."""
    if not deletions:
        return 0
    by_sponsor: dict[str, list[int]] = defaultdict(list)
    for sponsor, lead_id in await session.execute(_DELETE, _arrays(deletions)):
        by_sponsor[sponsor].append(int(lead_id))
    for sponsor, lead_ids in by_sponsor.items():
        await cancel_pending(session, sponsor, lead_ids)
    return sum(len(ids) for ids in by_sponsor.values())
