"""Every SQL statement about what happened to messages after sending: the
ingester's (refs, event log, first times and status) and the readers' (history,
stats per type, the type's report)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service import db
from service.tracking.repository import EVENT_COLUMNS


@dataclass(frozen=True, slots=True)
class MessageRef:
    """What the ingester needs of a message."""

    id: uuid.UUID
    sponsor_id: str
    type_id: uuid.UUID
    to_email: str
    sent_at: datetime | None
    provider_message_id: str | None
    links: list[str]


_REFS = text("""
SELECT id, sponsor_id, type_id, to_email, sent_at, provider_message_id, links
FROM messages WHERE id = ANY(CAST(:ids AS uuid[]))
""")


async def message_refs(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, MessageRef]:
    if not ids:
        return {}
    result = await session.execute(_REFS, {"ids": [str(i) for i in ids]})
    return {row.id: MessageRef(*row) for row in result}


_INSERT = text("""
INSERT INTO message_events
    (event_id, message_id, type_id, type, occurred_at, link_position, is_machine, ip_hash,
     payload)
SELECT v.event_id, v.message_id, v.type_id, v.type, v.occurred_at, v.link_position,
       v.is_machine, decode(v.ip_hash, 'hex'), CAST(v.payload AS jsonb)
FROM unnest(CAST(:event_ids AS text[]), CAST(:message_ids AS uuid[]),
            CAST(:type_ids AS uuid[]), CAST(:types AS text[]),
            CAST(:occurred AS timestamptz[]), CAST(:positions AS int[]),
            CAST(:machine AS boolean[]), CAST(:ip_hashes AS text[]), CAST(:payloads AS text[]))
    AS v(event_id, message_id, type_id, type, occurred_at, link_position, is_machine, ip_hash,
         payload)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
""")


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Log events; returns the ids that were new (a replayed event is skipped)."""
    if not rows:
        return set()
    params = db.as_columns(rows, {"event_ids": "event_id", **EVENT_COLUMNS})
    params["message_ids"] = [str(row["message_id"]) for row in rows]
    params["type_ids"] = [str(row["type_id"]) for row in rows]
    result = await session.execute(_INSERT, params)
    return {row[0] for row in result}


FIRST_TIMES = ("delivered_at", "opened_at", "clicked_at", "bounced_at", "complained_at")
_ORDER = (
    "'queued','sent','delivered','opened','clicked','failed','suppressed','bounced','complained'"
)
_RANK = "coalesce(array_position(ARRAY[" + _ORDER + "]::text[], {}), 0)"

# LEAST ignores NULLs: a first time only ever moves earlier. A queued row keeps
# its status: the sender moves it out of ``queued`` and reads the first times.
_APPLY = text(f"""
UPDATE messages m
SET status = CASE WHEN m.status <> 'queued' AND v.status IS NOT NULL
                       AND {_RANK.format("v.status")} > {_RANK.format("m.status")}
                  THEN v.status ELSE m.status END,
    {", ".join(f"{name} = LEAST(m.{name}, v.{name})" for name in FIRST_TIMES)},
    last_error = coalesce(v.note, m.last_error),
    updated_at = now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]),
            {", ".join(f"CAST(:{name} AS timestamptz[])" for name in FIRST_TIMES)},
            CAST(:notes AS text[]))
    AS v(id, status, {", ".join(FIRST_TIMES)}, note)
WHERE m.id = v.id
""")  # noqa: S608 (only constants are formatted in)


async def apply(
    session: AsyncSession,
    changes: Sequence[tuple[uuid.UUID, str | None, Mapping[str, datetime], str | None]],
) -> None:
    """(message, status, first times, note) of each changed message, in one statement."""
    if not changes:
        return
    params: dict[str, list[Any]] = {
        "ids": [str(c[0]) for c in changes],
        "statuses": [c[1] for c in changes],
        "notes": [c[3] for c in changes],
    }
    for name in FIRST_TIMES:
        params[name] = [c[2].get(name) for c in changes]
    await session.execute(_APPLY, params)


# Readers -------------------------------------------------------------------------

_HISTORY = text("""
SELECT type, occurred_at, is_machine, link_position, payload
FROM message_events WHERE message_id = :id ORDER BY occurred_at, recorded_at
""")


async def event_rows(session: AsyncSession, message_id: uuid.UUID) -> list[Any]:
    """Every event of a message, oldest first."""
    return list(await session.execute(_HISTORY, {"id": message_id}))


FIGURES = (
    "messages", "queued", "sent", "delivered", "bounced", "complained", "failed", "suppressed",
    "opened", "clicked",
)  # fmt: skip

# Served by (type_id, created_at) on messages; opened and clicked are first
# times that only a person's open or click (or the provider's) sets.
_FIGURES = """
SELECT {key}count(*) AS messages, count(*) FILTER (WHERE m.status = 'queued') AS queued,
       count(m.sent_at) AS sent, count(m.delivered_at) AS delivered,
       count(m.bounced_at) AS bounced, count(m.complained_at) AS complained,
       count(*) FILTER (WHERE m.status = 'failed') AS failed,
       count(*) FILTER (WHERE m.status = 'suppressed') AS suppressed,
       count(m.opened_at) AS opened, count(m.clicked_at) AS clicked
FROM messages m
"""
_TYPE_FIGURES = text(
    _FIGURES.format(key="")
    + "WHERE m.type_id = :type_id AND m.sponsor_id = :sponsor_id"  # the sponsor's, not another's
)


async def type_figures(
    connection: AsyncConnection, sponsor_id: str, type_id: uuid.UUID
) -> dict[str, int]:
    row = (
        await connection.execute(_TYPE_FIGURES, {"type_id": type_id, "sponsor_id": sponsor_id})
    ).one()
    return {name: int(value) for name, value in row._mapping.items()}


_TYPES_WITH_FIGURES = text(
    "SELECT t.id AS type_id, t.sponsor_id, t.key, t.category, figures.* "
    "FROM message_types t CROSS JOIN LATERAL ("
    + _FIGURES.format(key="")
    + "WHERE m.type_id = t.id) AS figures "
    "WHERE (CAST(:sponsors AS text[]) IS NULL OR t.sponsor_id = ANY(CAST(:sponsors AS text[]))) "
    "ORDER BY t.sponsor_id, t.key LIMIT :limit"
)


async def types_with_figures(
    session: AsyncSession, sponsor_ids: Sequence[str] | None, limit: int
) -> list[dict[str, Any]]:
    """One row per message type (of ``sponsor_ids``, or every sponsor's) with its figures."""
    params = {"sponsors": list(sponsor_ids) if sponsor_ids is not None else None, "limit": limit}
    return [dict(row._mapping) for row in await session.execute(_TYPES_WITH_FIGURES, params)]


_LINKS = text("""
SELECT m.links->>e.link_position AS url, count(*) AS clicks,
       count(*) FILTER (WHERE NOT e.is_machine) AS human_clicks
FROM message_events e JOIN messages m ON m.id = e.message_id
WHERE e.type_id = :type_id AND e.type = 'click' AND e.link_position IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 100
""")


async def type_links(connection: AsyncConnection, type_id: uuid.UUID) -> list[dict[str, Any]]:
    """Clicks of our redirect per target URL (messages of several versions of a type
    share a URL, not a position), most clicked first."""
    return [dict(row._mapping) for row in await connection.execute(_LINKS, {"type_id": type_id})]


# First times from the messages, hits from the event log: a point counts what
# ``type_figures`` counts, in the bucket it happened in.
_TIMELINE = text("""
SELECT date_trunc(:unit, t.at, 'UTC') AS at,
       count(*) FILTER (WHERE t.k = 'sent') AS sent,
       count(*) FILTER (WHERE t.k = 'delivered') AS delivered,
       count(*) FILTER (WHERE t.k = 'bounced') AS bounced,
       count(*) FILTER (WHERE t.k = 'complained') AS complained,
       count(*) FILTER (WHERE t.k IN ('open', 'open_m')) AS opens,
       count(*) FILTER (WHERE t.k = 'open') AS human_opens,
       count(*) FILTER (WHERE t.k IN ('click', 'click_m')) AS clicks,
       count(*) FILTER (WHERE t.k = 'click') AS human_clicks
FROM (
    SELECT v.k, v.at FROM messages m
    CROSS JOIN LATERAL (VALUES ('sent', m.sent_at), ('delivered', m.delivered_at),
                               ('bounced', m.bounced_at), ('complained', m.complained_at))
        AS v(k, at)
    WHERE m.type_id = :type_id AND v.at IS NOT NULL
    UNION ALL
    SELECT e.type || CASE WHEN e.is_machine THEN '_m' ELSE '' END, e.occurred_at
    FROM message_events e WHERE e.type_id = :type_id AND e.type IN ('open', 'click')
) AS t
GROUP BY 1 ORDER BY 1
""")


async def type_timeline(
    connection: AsyncConnection, type_id: uuid.UUID, unit: str
) -> list[dict[str, Any]]:
    """UTC buckets (``hour`` or ``day``) of sends, deliveries, bounces, complaints, and
    opens and clicks (all and human)."""
    result = await connection.execute(_TIMELINE, {"type_id": type_id, "unit": unit})
    return [dict(row._mapping) for row in result]


_REASONS = text("""
SELECT type, coalesce(payload->>'bounce_type', '') AS kind,
       coalesce(payload->>'detail', '') AS detail, count(*) AS count
FROM message_events
WHERE type_id = :type_id AND type IN ('bounced', 'complained')
GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3 LIMIT 20
""")


async def type_reasons(connection: AsyncConnection, type_id: uuid.UUID) -> list[dict[str, Any]]:
    """Bounces and complaints of a type's messages by provider reason, most frequent first."""
    return [dict(row._mapping) for row in await connection.execute(_REASONS, {"type_id": type_id})]
