"""Every SQL statement about leads."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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
