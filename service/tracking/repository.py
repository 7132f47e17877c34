"""Every SQL statement about tracking, unsubscribes and event ingestion.

All per-event work is set-based: one ``INSERT … SELECT FROM unnest(…)`` for a
batch of events, one ``UPDATE … FROM unnest(…)`` for the deliveries they touch,
one upsert for the counters.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import db
from service.stats import counters


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    id: int
    campaign_id: uuid.UUID
    batch_no: int
    sponsor_id: str
    recipient_email: str
    provider_message_id: str | None
    sent_at: datetime | None
    tracking_enabled: bool


_DELIVERIES = text("""
SELECT d.id, d.campaign_id, d.batch_no, c.sponsor_id, d.recipient_email,
       d.provider_message_id, d.sent_at, c.tracking_enabled
FROM campaign_deliveries d JOIN campaigns c ON c.id = d.campaign_id
WHERE d.id = ANY(CAST(:ids AS bigint[]))
""")


async def deliveries(session: AsyncSession, ids: Sequence[int]) -> list[DeliveryRef]:
    if not ids:
        return []
    rows = await session.execute(_DELIVERIES, {"ids": list(ids)})
    return [DeliveryRef(*row) for row in rows]


async def delivery_for_unsubscribe(session: AsyncSession, delivery_id: int) -> DeliveryRef | None:
    found = await deliveries(session, [delivery_id])
    return found[0] if found else None


async def add_suppressions(
    session: AsyncSession, rows: Sequence[tuple[str | None, str, str, str]]
) -> None:
    """(sponsor or None for global, email, reason, source); an existing one is kept."""
    if not rows:
        return
    sponsors, emails, reasons, sources = (list(col) for col in zip(*rows, strict=True))
    await session.execute(
        text("""
INSERT INTO suppressions (sponsor_id, email, reason, source)
SELECT * FROM unnest(CAST(:sponsors AS text[]), CAST(:emails AS text[]),
                     CAST(:reasons AS text[]), CAST(:sources AS text[]))
ON CONFLICT ((coalesce(sponsor_id, '')), email) DO NOTHING
"""),
        {"sponsors": sponsors, "emails": emails, "reasons": reasons, "sources": sources},
    )


# There is no index on deliveries by address (every planned row would pay for it),
# so the path is sponsor → lead (unique (sponsor_id, email)) → that sponsor's
# campaigns → (campaign_id, lead_id): one probe per sponsor and per campaign of a
# sponsor that holds the address, for the few events that match no delivery.
_SPONSORS_THAT_SENT = text("""
SELECT l.sponsor_id, l.email
FROM sponsors s
CROSS JOIN unnest(CAST(:emails AS text[])) AS v(email)
JOIN leads l ON l.sponsor_id = s.id AND l.email = v.email
WHERE EXISTS (
    SELECT 1 FROM campaigns c
    JOIN campaign_deliveries d ON d.campaign_id = c.id AND d.lead_id = l.id
    WHERE c.sponsor_id = l.sponsor_id AND d.status NOT IN ('pending', 'cancelled')
)
""")


async def sponsors_that_sent(session: AsyncSession, emails: Sequence[str]) -> list[tuple[str, str]]:
    """(sponsor, email) for each sponsor that sent a message to one of ``emails``."""
    if not emails:
        return []
    rows = await session.execute(_SPONSORS_THAT_SENT, {"emails": list(emails)})
    return [(row[0], row[1]) for row in rows]


async def mark_unsubscribed(session: AsyncSession, ref: DeliveryRef) -> bool:
    """Set ``unsubscribed_at`` once, log the event and count it; True the first time."""
    moved = await session.scalar(
        text("""
UPDATE campaign_deliveries SET unsubscribed_at = now()
WHERE id = :id AND unsubscribed_at IS NULL
RETURNING unsubscribed_at
"""),
        {"id": ref.id},
    )
    if moved is None:
        return False
    await session.execute(
        text("""
INSERT INTO delivery_events (event_id, delivery_id, campaign_id, type, occurred_at)
VALUES (:event_id, :delivery_id, :campaign_id, 'unsubscribed', :at)
ON CONFLICT (event_id, occurred_at) DO NOTHING
"""),
        {
            "event_id": f"unsubscribe:{ref.id}",
            "delivery_id": ref.id,
            "campaign_id": ref.campaign_id,
            "at": moved,
        },
    )
    shard = counters.shard_of(ref.batch_no)
    await counters.bump(session, {(ref.campaign_id, shard): {"unsubscribed": 1}})
    await counters.bump_hourly(session, {(ref.campaign_id, _hour(moved)): {"unsubscribed": 1}})
    return True


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


# Bind name → row key of the columns both event logs share (delivery_events here,
# message_events in service.messages.events_repository).
EVENT_COLUMNS = {
    "types": "type",
    "occurred": "occurred_at",
    "positions": "link_position",
    "machine": "is_machine",
    "ip_hashes": "ip_hash",
    "payloads": "payload",
}

# The key is (event_id, occurred_at): the table is partitioned by time, and an
# event's time travels with it, so a replay still meets its first copy.
_INSERT_EVENTS = text("""
INSERT INTO delivery_events
    (event_id, delivery_id, campaign_id, type, occurred_at, link_position, is_machine,
     ip_hash, payload)
SELECT v.event_id, v.delivery_id, v.campaign_id, v.type, v.occurred_at, v.link_position,
       v.is_machine, decode(v.ip_hash, 'hex'), CAST(v.payload AS jsonb)
FROM unnest(CAST(:event_ids AS text[]), CAST(:delivery_ids AS bigint[]),
            CAST(:campaign_ids AS uuid[]), CAST(:types AS text[]),
            CAST(:occurred AS timestamptz[]), CAST(:positions AS int[]),
            CAST(:machine AS boolean[]), CAST(:ip_hashes AS text[]), CAST(:payloads AS text[]))
    AS v(event_id, delivery_id, campaign_id, type, occurred_at, link_position, is_machine,
         ip_hash, payload)
ON CONFLICT (event_id, occurred_at) DO NOTHING
RETURNING event_id
""")


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Log events; returns the ids that were new (a replayed event is skipped)."""
    if not rows:
        return set()
    params = db.as_columns(
        rows,
        {
            "event_ids": "event_id",
            "delivery_ids": "delivery_id",
            "campaign_ids": "campaign_id",
            **EVENT_COLUMNS,
        },
    )
    result = await session.execute(_INSERT_EVENTS, params)
    return {row[0] for row in result}


# Forward-only status: a delivery never moves to a lower rank.
STATUS_ORDER = (
    "pending", "cancelled", "sent", "delivered", "failed", "suppressed", "bounced", "complained",
)  # fmt: skip
_ORDER = ",".join(f"'{s}'" for s in STATUS_ORDER)
_RANK = "coalesce(array_position(ARRAY[" + _ORDER + "]::text[], {}), 0)"

_APPLY = text(f"""
WITH v AS (
    SELECT * FROM unnest(
        CAST(:ids AS bigint[]), CAST(:statuses AS text[]),
        CAST(:delivered AS timestamptz[]), CAST(:bounced AS timestamptz[]),
        CAST(:complained AS timestamptz[]), CAST(:opened AS timestamptz[]),
        CAST(:human_opened AS timestamptz[]), CAST(:clicked AS timestamptz[]),
        CAST(:human_clicked AS timestamptz[]), CAST(:opens AS int[]), CAST(:clicks AS int[]),
        CAST(:notes AS text[]))
    AS v(id, status, delivered_at, bounced_at, complained_at, opened_at, human_opened_at,
         clicked_at, human_clicked_at, opens, clicks, note)
), old AS (
    SELECT d.id, d.status, d.delivered_at, d.bounced_at, d.complained_at, d.first_opened_at,
           d.first_human_opened_at, d.first_clicked_at, d.first_human_clicked_at
    FROM campaign_deliveries d JOIN v ON v.id = d.id
    FOR UPDATE OF d
)
UPDATE campaign_deliveries d SET
    -- A row the sender has not marked sent yet keeps its status: the sender moves it
    -- (counting it), and times and counters from here are right either way.
    status = CASE WHEN {_RANK.format("v.status")} > {_RANK.format("old.status")}
                       AND old.status NOT IN ('pending', 'cancelled')
                  THEN v.status ELSE old.status END,
    delivered_at = LEAST(old.delivered_at, v.delivered_at),
    bounced_at = LEAST(old.bounced_at, v.bounced_at),
    complained_at = LEAST(old.complained_at, v.complained_at),
    first_opened_at = LEAST(old.first_opened_at, v.opened_at),
    first_human_opened_at = LEAST(old.first_human_opened_at, v.human_opened_at),
    first_clicked_at = LEAST(old.first_clicked_at, v.clicked_at),
    first_human_clicked_at = LEAST(old.first_human_clicked_at, v.human_clicked_at),
    open_count = d.open_count + v.opens,
    click_count = d.click_count + v.clicks,
    last_error = coalesce(v.note, d.last_error)
FROM v, old
WHERE d.id = v.id AND old.id = d.id
RETURNING d.id, old.status, d.status,
    old.delivered_at IS NULL AND d.delivered_at IS NOT NULL, d.delivered_at,
    old.bounced_at IS NULL AND d.bounced_at IS NOT NULL, d.bounced_at,
    old.complained_at IS NULL AND d.complained_at IS NOT NULL, d.complained_at,
    old.first_opened_at IS NULL AND d.first_opened_at IS NOT NULL,
    old.first_human_opened_at IS NULL AND d.first_human_opened_at IS NOT NULL,
    old.first_clicked_at IS NULL AND d.first_clicked_at IS NOT NULL,
    old.first_human_clicked_at IS NULL AND d.first_human_clicked_at IS NOT NULL
""")  # noqa: S608


@dataclass(frozen=True, slots=True)
class Applied:
    id: int
    old_status: str
    status: str
    new_delivered: bool
    delivered_at: datetime | None
    new_bounced: bool
    bounced_at: datetime | None
    new_complained: bool
    complained_at: datetime | None
    new_opened: bool
    new_human_opened: bool
    new_clicked: bool
    new_human_clicked: bool


async def apply_to_deliveries(
    session: AsyncSession, changes: dict[str, list[Any]]
) -> list[Applied]:
    """Merge per-delivery changes (arrays of equal length, keys as in ``_APPLY``)."""
    if not changes["ids"]:
        return []
    result = await session.execute(_APPLY, changes)
    return [Applied(*row) for row in result]


async def bump_link_clicks(
    session: AsyncSession, deltas: dict[tuple[uuid.UUID, int], tuple[int, int]]
) -> None:
    """Per-link (clicks, human clicks) on ``campaign_links``."""
    if not deltas:
        return
    keys = sorted(deltas)
    await session.execute(
        text("""
UPDATE campaign_links l SET clicks = l.clicks + v.clicks, human_clicks = l.human_clicks + v.human
FROM unnest(CAST(:campaigns AS uuid[]), CAST(:positions AS int[]), CAST(:clicks AS bigint[]),
            CAST(:human AS bigint[])) AS v(campaign_id, position, clicks, human)
WHERE l.campaign_id = v.campaign_id AND l.position = v.position
"""),
        {
            "campaigns": [k[0] for k in keys],
            "positions": [k[1] for k in keys],
            "clicks": [deltas[k][0] for k in keys],
            "human": [deltas[k][1] for k in keys],
        },
    )


async def link_positions(
    session: AsyncSession, campaign_ids: Sequence[uuid.UUID]
) -> dict[tuple[uuid.UUID, str], int]:
    """(campaign, url) → position, to place provider-reported clicks on our links."""
    if not campaign_ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT campaign_id, url, position FROM campaign_links "
            "WHERE campaign_id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": list(set(campaign_ids))},
    )
    return {(row[0], row[1]): row[2] for row in rows}


async def sponsor_reputation(
    session: AsyncSession, sponsor_id: str, window: int
) -> tuple[int, int, int]:
    """(deliveries, hard bounces, complaints) over the sponsor's last ``window`` sent messages."""
    row = (
        await session.execute(
            text("""
SELECT count(*), count(bounced_at), count(complained_at) FROM (
    SELECT d.bounced_at, d.complained_at
    FROM campaigns c
    CROSS JOIN LATERAL (
        SELECT d.bounced_at, d.complained_at, d.sent_at FROM campaign_deliveries d
        WHERE d.campaign_id = c.id AND d.sent_at IS NOT NULL
        ORDER BY d.sent_at DESC LIMIT :window
    ) d
    WHERE c.sponsor_id = :sponsor_id
    ORDER BY d.sent_at DESC LIMIT :window
) recent
"""),
            {"sponsor_id": sponsor_id, "window": window},
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])
