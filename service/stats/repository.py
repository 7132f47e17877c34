"""Every SQL statement behind the stats routes; counters only, never a scan of deliveries
(except the CSV export, which streams them with a server-side cursor)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from schemas.stats import FIGURES
from service.stats import counters

_SUMS = counters.sums_sql("s", FIGURES)


_CAMPAIGN_FIGURES = text(f"""
SELECT c.status, c.total_recipients, f.*,
       (SELECT coalesce(json_agg(json_build_object(
                   'position', l.position, 'url', l.url,
                   'clicks', l.clicks, 'human_clicks', l.human_clicks) ORDER BY l.position),
               '[]')
        FROM campaign_links l WHERE l.campaign_id = c.id) AS links
FROM campaigns c
CROSS JOIN LATERAL (SELECT {_SUMS} FROM campaign_stats s WHERE s.campaign_id = c.id) f
WHERE c.id = :id AND c.sponsor_id = :sponsor
""")  # noqa: S608 - only the fixed column list is formatted in


async def campaign_figures(
    connection: AsyncConnection, sponsor_id: str, campaign_id: uuid.UUID
) -> dict[str, Any] | None:
    """The campaign's status, recipients, counters summed over their shards and per-link
    clicks, in one statement (one round trip); None when the sponsor has no such campaign."""
    row = (
        await connection.execute(_CAMPAIGN_FIGURES, {"id": campaign_id, "sponsor": sponsor_id})
    ).first()
    return None if row is None else dict(row._mapping)


_TIMELINE_COLUMNS = (
    "delivered", "bounced", "complained", "unsubscribed", "opens", "human_opens", "clicks",
    "human_clicks",
)  # fmt: skip


async def timeline(
    connection: AsyncConnection, campaign_id: uuid.UUID, unit: str
) -> list[dict[str, Any]]:
    assert unit in ("hour", "day")
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in _TIMELINE_COLUMNS)
    rows = await connection.execute(
        text(
            f"SELECT date_trunc(:unit, bucket, 'UTC') AS at, {sums} "  # noqa: S608
            "FROM campaign_stats_hourly WHERE campaign_id = :id GROUP BY 1 ORDER BY 1"
        ),
        {"unit": unit, "id": campaign_id},
    )
    return [dict(row._mapping) for row in rows]


async def campaigns_with_figures(
    session: AsyncSession,
    *,
    sponsor_ids: Sequence[str] | None,
    event_id: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """One row per campaign with its summed counters (one hash aggregate over their shards)."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if sponsor_ids is not None:
        where.append("c.sponsor_id = ANY(CAST(:sponsors AS text[]))")
        params["sponsors"] = list(sponsor_ids)
    if event_id is not None:
        where.append("c.event_id = :event_id")
        params["event_id"] = event_id
    if created_from is not None:
        where.append("c.created_at >= :created_from")
        params["created_from"] = created_from
    if created_to is not None:
        where.append("c.created_at < :created_to")
        params["created_to"] = created_to
    # Only fixed fragments above are joined in; values are bound.
    statement = text(f"""
WITH chosen AS (
    SELECT c.id, c.sponsor_id, c.event_id, c.name, c.status, c.created_at, c.total_recipients
    FROM campaigns c
    WHERE {" AND ".join(where)}
    ORDER BY c.created_at DESC, c.id
    LIMIT :limit
)
SELECT c.id AS campaign_id, c.sponsor_id, c.event_id, c.name, c.status, c.created_at,
       c.total_recipients AS recipients, {_SUMS}
FROM chosen c LEFT JOIN campaign_stats s ON s.campaign_id = c.id
GROUP BY c.id, c.sponsor_id, c.event_id, c.name, c.status, c.created_at, c.total_recipients
ORDER BY c.created_at DESC, c.id
""")  # noqa: S608
    rows = await session.execute(statement, params)
    return [dict(row._mapping) for row in rows]


DELIVERY_COLUMNS = (
    "id", "lead_id", "recipient_email", "status", "batch_no", "provider_message_id", "attempts",
    "sent_at", "delivered_at", "first_opened_at", "first_clicked_at", "bounced_at",
    "complained_at", "unsubscribed_at", "open_count", "click_count", "last_error",
)  # fmt: skip


async def stream_deliveries(
    engine: AsyncEngine, campaign_id: uuid.UUID, chunk: int = 5000
) -> AsyncIterator[Sequence[Any]]:
    """Every delivery row of a campaign, ``chunk`` at a time, from a server-side cursor."""
    statement = text(
        f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM campaign_deliveries "  # noqa: S608
        "WHERE campaign_id = :id"
    ).execution_options(yield_per=chunk)
    async with engine.connect() as connection:
        result = await connection.stream(statement, {"id": campaign_id})
        async for rows in result.partitions(chunk):
            yield rows


# Served by the partial index on rows without a delivery (migration 0014); events of
# before it that carry no reason were kept because their delivery was unknown.
_UNMATCHED_COUNTS = text("""
SELECT coalesce(payload->>'source', 'unknown') AS provider,
       coalesce(payload->>'unmatched', 'unknown_delivery') AS reason, count(*) AS count
FROM delivery_events WHERE delivery_id IS NULL
GROUP BY 1, 2 ORDER BY 1, 2
""")
_UNMATCHED_RECENT = text("""
SELECT event_id, coalesce(payload->>'source', 'unknown') AS provider, type,
       coalesce(payload->>'unmatched', 'unknown_delivery') AS reason,
       payload->>'email_id' AS email_id, occurred_at, recorded_at
FROM delivery_events WHERE delivery_id IS NULL
ORDER BY recorded_at DESC LIMIT :limit
""")


async def unmatched_events(
    connection: AsyncConnection, limit: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(counts by provider and reason, the newest ``limit``) of events with no delivery."""
    counts = await connection.execute(_UNMATCHED_COUNTS)
    recent = await connection.execute(_UNMATCHED_RECENT, {"limit": limit})
    return [dict(r._mapping) for r in counts], [dict(r._mapping) for r in recent]
