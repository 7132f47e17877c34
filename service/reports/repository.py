"""Every SQL statement behind the report page that the stats endpoint does not already run."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_HEADER = text("""
SELECT id, sponsor_id, name, subject, audience_type, audience_filter, event_id, created_at,
       completed_at, ab_test, ab_winner, ab_decision
FROM campaigns WHERE id = :id AND (CAST(:sponsor AS text) IS NULL OR sponsor_id = :sponsor)
""")


async def campaign_header(
    connection: AsyncConnection, campaign_id: uuid.UUID, sponsor_id: str | None = None
) -> dict[str, Any] | None:
    """Name, subject, audience and dates of a campaign (of ``sponsor_id`` when given)."""
    row = (await connection.execute(_HEADER, {"id": campaign_id, "sponsor": sponsor_id})).first()
    return None if row is None else dict(row._mapping)


# Served by the (campaign_id, occurred_at) index of delivery_events; only the report page
# runs it, never a send or tracking path.
_REASONS = text("""
SELECT type, coalesce(payload->>'bounce_type', '') AS kind,
       coalesce(payload->>'detail', '') AS detail, count(*) AS count
FROM delivery_events
WHERE campaign_id = :id AND type IN ('bounced', 'complained')
GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3 LIMIT :limit
""")


async def deliverability_reasons(
    connection: AsyncConnection, campaign_id: uuid.UUID, limit: int = 20
) -> list[dict[str, Any]]:
    """Bounce and complaint events of a campaign grouped by type and provider reason,
    most frequent first."""
    rows = await connection.execute(_REASONS, {"id": campaign_id, "limit": limit})
    return [dict(row._mapping) for row in rows]


_TYPE_HEADER = text("""
SELECT id, sponsor_id, key, category, subject, created_at, updated_at
FROM message_types WHERE id = :id AND (CAST(:sponsor AS text) IS NULL OR sponsor_id = :sponsor)
""")


async def message_type_header(
    connection: AsyncConnection, type_id: uuid.UUID, sponsor_id: str | None = None
) -> dict[str, Any] | None:
    """Key, category, subject and dates of a message type (of ``sponsor_id`` when given)."""
    row = (await connection.execute(_TYPE_HEADER, {"id": type_id, "sponsor": sponsor_id})).first()
    return None if row is None else dict(row._mapping)
