"""Every SQL statement about leads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, select, text
from sqlalchemy import delete as sa_delete
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import NotFound
from service.models import Lead
from service.stats import counters

# Fields a bulk upsert may set; each is updated only where the row sent it,
# which the row's ``present`` bit mask says (bit i: the i-th field).
# ``attributes`` comes last, as in ``staged_record``.
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
FIELD_BITS = {name: 1 << i for i, name in enumerate(_FIELDS)}
# The staging record is (line, email, present, *STAGED_FIELDS).
STAGED_FIELDS = tuple(_FIELDS)
STAGED_COLUMNS = ("line", "email", "present", *_FIELDS)
_RECORD = ", ".join(
    ["line integer", "email text", "present integer", *(f"{k} {v}" for k, v in _FIELDS.items())]
)
SET_SENT_FIELDS = ",\n    ".join(
    f"{k} = CASE WHEN i.present & {bit} <> 0 THEN i.{k} ELSE l.{k} END"
    for k, bit in FIELD_BITS.items()
)
_DEFAULTS = {"tags": "'{}'::text[]", "follow_up_status": "'new'", "attributes": "'{}'::jsonb"}
INSERT_VALUES = ", ".join(
    f"coalesce(i.{k}, {_DEFAULTS[k]})" if k in _DEFAULTS else f"i.{k}" for k in _FIELDS
)


# One address's lead, probed in the (sponsor, email) index. The sponsor comes
# through a sub-select so that the planner prices it as an average sponsor: for
# a sponsor its statistics do not know yet (a new sponsor's first import) it
# expects about one lead, and then preferred a smaller (sponsor, ...) index
# with the address as a filter, which read every lead the import had written
# so far for each row.
EXISTING_PROBE = (
    "SELECT x.id FROM leads x "
    "WHERE x.sponsor_id = (SELECT CAST(:sponsor_id AS text)) AND x.email = i.email OFFSET 0"
)


def _upsert(source: str) -> Any:
    """One statement: update the leads that exist, insert the others, from ``source``
    (a FROM item named ``i``: rows of ``_RECORD``'s shape, one per address).

    Existing leads are found by probing the (sponsor, email) index row by row
    (``OFFSET 0`` keeps the planner from turning the probe into a join) and
    updated by id. A join would be planned from the sponsor's row estimate,
    which a large import makes stale within its own transaction: hashing all
    the sponsor's leads for every chunk made imports slow down as they grew.
    """
    return text(f"""
WITH existing AS MATERIALIZED (
    SELECT i.*, m.id AS lead_id
    FROM {source}
    CROSS JOIN LATERAL (
        {EXISTING_PROBE}
    ) AS m
), updated AS (
    UPDATE leads l SET
    {SET_SENT_FIELDS},
    updated_at = now()
    FROM existing i
    WHERE l.id = ANY(ARRAY(SELECT lead_id FROM existing)) AND l.id = i.lead_id
    RETURNING 1
), inserted AS (
    INSERT INTO leads (sponsor_id, email, {", ".join(_FIELDS)})
    SELECT :sponsor_id, i.email, {INSERT_VALUES}
    FROM {source}
    WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.email = i.email)
    ON CONFLICT (sponsor_id, email) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM updated) AS updated
""")  # noqa: S608 - every interpolated name comes from _FIELDS, never from input


# Few rows travel as one JSON parameter; many are copied into a staging table
# first (binary COPY), which costs three more round trips but no JSON at all.
_UPSERT_JSON = _upsert(f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS i({_RECORD})")
_UPSERT_STAGED = _upsert("lead_import_rows AS i")
COPY_MIN_ROWS = 500
_STAGE = text(f"CREATE TEMP TABLE IF NOT EXISTS lead_import_rows ({_RECORD}) ON COMMIT DROP")
_CLEAR_STAGE = text("TRUNCATE lead_import_rows")


def present_mask(lead: dict[str, Any]) -> int:
    """The ``present`` bits of a row: which fields it sent."""
    mask = 0
    for name in lead:
        mask |= FIELD_BITS.get(name, 0)
    return mask


_PLAIN_FIELDS = tuple(name for name in _FIELDS if name != "attributes")


def staged_record(line: int, lead: dict[str, Any]) -> tuple[Any, ...]:
    """A row as the staging table's record (``line`` numbers it within the upload)."""
    attributes = lead.get("attributes")
    return (
        line,
        lead["email"],
        present_mask(lead),
        *map(lead.get, _PLAIN_FIELDS),
        None if attributes is None else orjson.dumps(attributes).decode(),
    )


async def asyncpg_connection(session: AsyncSession) -> Any:
    """The session's asyncpg connection, for COPY."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def clear_stage(session: AsyncSession) -> None:
    """An empty staging table ``lead_import_rows`` (temporary, gone at commit)."""
    await session.execute(_STAGE)
    await session.execute(_CLEAR_STAGE)


async def stage(session: AsyncSession, records: list[tuple[Any, ...]]) -> None:
    """Replace the staging table's rows with ``records`` (see ``staged_record``)."""
    await clear_stage(session)
    driver = await asyncpg_connection(session)
    await driver.copy_records_to_table("lead_import_rows", records=records, columns=STAGED_COLUMNS)


async def upsert_staged(session: AsyncSession, sponsor_id: str) -> tuple[int, int]:
    """Upsert the staged rows (one per address); returns (inserted, updated)."""
    result = (await session.execute(_UPSERT_STAGED, {"sponsor_id": sponsor_id})).one()
    return int(result.inserted), int(result.updated)


async def upsert_many(
    session: AsyncSession, sponsor_id: str, leads: list[dict[str, Any]]
) -> tuple[int, int]:
    """Insert or update leads (distinct addresses) by (sponsor, email); returns
    (inserted, updated)."""
    if not leads:
        return 0, 0
    if len(leads) >= COPY_MIN_ROWS:
        await stage(session, [staged_record(n, lead) for n, lead in enumerate(leads)])
        return await upsert_staged(session, sponsor_id)
    rows = [{**lead, "line": n, "present": present_mask(lead)} for n, lead in enumerate(leads)]
    result = (
        await session.execute(
            _UPSERT_JSON, {"rows": orjson.dumps(rows).decode(), "sponsor_id": sponsor_id}
        )
    ).one()
    return int(result.inserted), int(result.updated)


# ---------------------------------------------------------------- reading and deleting

_LEAD_COLUMNS = (
    "id, email, name, first_name, last_name, company, title, intent_level, intent_score, "
    "tags, follow_up_status, event_id, attributes, created_at, updated_at"
)


def list_query(
    sponsor_id: str, *, limit: int, after_id: int | None, filters: dict[str, Any]
) -> Select[Lead]:
    """The statement of ``list_page``."""
    # The sponsor as a range, the order (sponsor_id, id): with an equality the
    # planner may walk the primary key in id order through every other
    # sponsor's leads, betting a filter matches early; its statistics cannot
    # tell that a sponsor's leads sit together, maybe at the end. Only the
    # (sponsor_id, …) indexes give this order, so a page reads that sponsor's.
    query = select(Lead).where(Lead.sponsor_id >= sponsor_id, Lead.sponsor_id <= sponsor_id)
    for name, value in filters.items():
        if name == "tag":
            query = query.where(Lead.tags.contains([value]))
        elif name == "email":
            query = query.where(Lead.email == value)
        else:
            query = query.where(getattr(Lead, name) == value)
    if after_id is not None:
        query = query.where(Lead.id > after_id)
    return query.order_by(Lead.sponsor_id, Lead.id).limit(limit)


async def list_page(
    session: AsyncSession,
    sponsor_id: str,
    *,
    limit: int,
    after_id: int | None,
    filters: dict[str, Any],
) -> list[Lead]:
    """The sponsor's leads in id order, keyset-paginated; ``filters`` are equality tests."""
    query = list_query(sponsor_id, limit=limit, after_id=after_id, filters=filters)
    return list((await session.scalars(query)).all())


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

# The upstream lead's columns, in the order both sync paths write them.
SYNC_FIELDS = (
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
INSERT INTO leads (sponsor_id, email, {", ".join(SYNC_FIELDS)}, source_updated_at)
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
    {", ".join(f"{k} = EXCLUDED.{k}" for k in SYNC_FIELDS)},
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
        **{k: values.get(k) for k in SYNC_FIELDS},
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
