"""Every SQL statement about digests: subscriptions, claimed runs, and what a digest reads."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import TextClause, and_, delete, func, select, text, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import Conflict, NotFound
from service.models import DigestSubscription, Message, MessageType, RecipientPreference

# What one digest lists at most of each kind: a digest is read, not searched.
LIMIT = 25


async def get(
    session: AsyncSession, sponsor_id: str, subscription_id: uuid.UUID
) -> DigestSubscription:
    row = await session.scalar(
        select(DigestSubscription).where(
            DigestSubscription.id == subscription_id, DigestSubscription.sponsor_id == sponsor_id
        )
    )
    if row is None:
        raise NotFound(
            "digest_subscription_not_found",
            f"no digest subscription '{subscription_id}'",
            "subscription_id",
        )
    return row


async def find(session: AsyncSession, subscription_id: uuid.UUID) -> DigestSubscription | None:
    return await session.get(DigestSubscription, subscription_id)


async def page(
    session: AsyncSession, sponsor_id: str, *, limit: int, after: uuid.UUID | None
) -> list[DigestSubscription]:
    query = select(DigestSubscription).where(DigestSubscription.sponsor_id == sponsor_id)
    if after is not None:
        query = query.where(DigestSubscription.id > after)
    return list((await session.scalars(query.order_by(DigestSubscription.id).limit(limit))).all())


async def add(session: AsyncSession, row: DigestSubscription) -> None:
    """Insert; an address the sponsor already subscribed is a 409."""
    await _flush_unique(session, row.email, lambda: session.add(row))


async def save(session: AsyncSession, row: DigestSubscription) -> None:
    """Write a changed subscription; moving it onto a subscribed address is a 409."""
    await _flush_unique(session, row.email, lambda: None)


async def _flush_unique(session: AsyncSession, email: str, change: Any) -> None:
    try:
        async with session.begin_nested():
            change()
            await session.flush()
    except IntegrityError:
        raise Conflict(
            "digest_subscription_exists", f"'{email}' already gets the digest", "email"
        ) from None


async def remove(session: AsyncSession, subscription_id: uuid.UUID) -> None:
    await session.execute(
        delete(DigestSubscription).where(DigestSubscription.id == subscription_id)
    )


_CLAIM = text("""
INSERT INTO digest_runs (subscription_id, period_start, period_end)
VALUES (:subscription_id, :period_start, :period_end)
ON CONFLICT DO NOTHING
RETURNING true
""")


async def claim_run(
    session: AsyncSession, subscription_id: uuid.UUID, period_start: datetime, period_end: datetime
) -> bool:
    """True the first time a period of a subscription is claimed; False ever after."""
    params = {
        "subscription_id": subscription_id,
        "period_start": period_start,
        "period_end": period_end,
    }
    return bool(await session.scalar(_CLAIM, params))


async def record_message(
    session: AsyncSession, subscription_id: uuid.UUID, period_start: datetime, message_id: uuid.UUID
) -> None:
    await session.execute(
        text(
            "UPDATE digest_runs SET message_id = :message_id "
            "WHERE subscription_id = :subscription_id AND period_start = :period_start"
        ),
        {
            "message_id": message_id,
            "subscription_id": subscription_id,
            "period_start": period_start,
        },
    )


@dataclass(frozen=True, slots=True)
class Window:
    """What one digest reads: a sponsor's rows between two instants."""

    sponsor_id: str
    start: datetime
    end: datetime


async def _in_window(
    session: AsyncSession, statement: TextClause, window: Window, **params: object
) -> list[dict[str, Any]]:
    """The rows a digest section's statement reads in the window, at most ``LIMIT``."""
    bound = {"sponsor_id": window.sponsor_id, "start": window.start, "end": window.end}
    rows = await session.execute(statement, {**bound, **params, "limit": LIMIT})
    return [dict(r._mapping) for r in rows]


_QUALIFIED_LEADS = text("""
SELECT email, name, company, title, intent_level, intent_score
FROM leads
WHERE sponsor_id = :sponsor_id
  AND created_at >= :start AND created_at < :end
  AND (intent_level = 'hot' OR intent_score >= :threshold)
ORDER BY intent_score DESC NULLS LAST, created_at, id
LIMIT :limit
""")


async def qualified_leads(
    session: AsyncSession, window: Window, threshold: int
) -> list[dict[str, Any]]:
    """Leads added in the window that are hot or score at least ``threshold``, best first."""
    return await _in_window(session, _QUALIFIED_LEADS, window, threshold=threshold)


_APPOINTMENTS = text("""
SELECT appointment_id, start_at, time_zone, lead_email, details
FROM appointments
WHERE sponsor_id = :sponsor_id AND state = 'booked'
  AND start_at >= :start AND start_at < :end
ORDER BY start_at, appointment_id
LIMIT :limit
""")


async def booked_appointments(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """Booked appointments starting in the window, earliest first."""
    return await _in_window(session, _APPOINTMENTS, window)


# A campaign was active in the window if it sent, finished, or had tracked activity
# (an hourly bucket) in it. Its figures are the window's: deliveries sent in it (the
# partial index on ``sent_at``), opens and clicks of the hours starting in it (each
# hour falls in exactly one period); and its totals beside them.
_CAMPAIGNS = text("""
SELECT c.id, c.name,
       (SELECT count(*) FROM campaign_deliveries d
        WHERE d.campaign_id = c.id AND d.sent_at >= :start AND d.sent_at < :end) AS sent,
       coalesce(h.opens, 0)::bigint AS opens,
       coalesce(h.clicks, 0)::bigint AS clicks,
       coalesce(t.sent, 0)::bigint AS total_sent,
       coalesce(t.opened, 0)::bigint AS total_opened,
       coalesce(t.clicked, 0)::bigint AS total_clicked
FROM campaigns c
LEFT JOIN LATERAL (
    SELECT sum(opens) AS opens, sum(clicks) AS clicks, count(*) AS hours
    FROM campaign_stats_hourly
    WHERE campaign_id = c.id AND bucket >= :start AND bucket < :end
) h ON true
LEFT JOIN LATERAL (
    SELECT sum(sent) AS sent, sum(opened) AS opened, sum(clicked) AS clicked
    FROM campaign_stats WHERE campaign_id = c.id
) t ON true
WHERE c.sponsor_id = :sponsor_id
  AND (
    (c.last_progress_at >= :start AND c.last_progress_at < :end)
    OR (c.completed_at >= :start AND c.completed_at < :end)
    OR h.hours > 0
  )
ORDER BY c.name, c.id
LIMIT :limit
""")


async def campaign_results(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """Campaigns active in the window, with the window's sends, opens and clicks and
    their totals (unique recipients sent, opened, clicked)."""
    return await _in_window(session, _CAMPAIGNS, window)


async def held_for(
    session: AsyncSession, sponsor_id: str, email: str, *, limit: int, weekly: bool
) -> list[Message]:
    """The member's held messages, oldest first; those held by a ``weekly``
    preference (as it stands now) only when ``weekly`` (the weekly slot)."""
    query = select(Message).where(
        Message.sponsor_id == sponsor_id, Message.to_email == email, Message.status == "held"
    )
    if not weekly:
        preference = (
            select(RecipientPreference.frequency)
            .join(MessageType, MessageType.preference_category == RecipientPreference.category)
            .where(
                MessageType.id == Message.type_id,
                and_(
                    RecipientPreference.sponsor_id == Message.sponsor_id,
                    RecipientPreference.email == Message.to_email,
                ),
            )
            .scalar_subquery()
        )
        query = query.where(func.coalesce(preference, "") != "weekly")
    query = query.order_by(tuple_(Message.created_at, Message.id)).limit(limit)
    return list((await session.scalars(query)).all())


async def mark_digested(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    """``held`` → ``digested``: told in a digest, never sent on their own."""
    await session.execute(
        text(
            "UPDATE messages SET status = 'digested', updated_at = now() "
            "WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'held'"
        ),
        {"ids": [str(i) for i in ids]},
    )


_ADD_EVENTS = text("""
INSERT INTO digest_events (topic, event_id, sponsor_id, kind, type, email, summary)
SELECT * FROM unnest(
    CAST(:topics AS text[]), CAST(:event_ids AS text[]), CAST(:sponsor_ids AS text[]),
    CAST(:kinds AS text[]), CAST(:types AS text[]), CAST(:emails AS text[]),
    CAST(:summaries AS jsonb[])
)
ON CONFLICT DO NOTHING
""")


async def add_events(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Insert replies and conversions in one statement; an event already kept is skipped.
    How many were new."""
    if not rows:
        return 0
    params = {
        "topics": [r["topic"] for r in rows],
        "event_ids": [r["event_id"] for r in rows],
        "sponsor_ids": [r["sponsor_id"] for r in rows],
        "kinds": [r["kind"] for r in rows],
        "types": [r["type"] for r in rows],
        "emails": [r["email"] for r in rows],
        "summaries": [orjson.dumps(r["summary"]).decode() for r in rows],
    }
    result = await session.execute(_ADD_EVENTS, params)
    return int(result.rowcount)  # type: ignore[attr-defined]


# The first ``LIMIT`` of each kind: a busy day of orders must not hide the replies.
_EVENTS = text("""
SELECT kind, type, email, summary, recorded_at FROM (
    SELECT kind, type, email, summary, recorded_at, event_id,
           row_number() OVER (PARTITION BY kind ORDER BY recorded_at, event_id) AS n
    FROM digest_events
    WHERE sponsor_id = :sponsor_id AND recorded_at >= :start AND recorded_at < :end
) e
WHERE n <= :limit
ORDER BY recorded_at, event_id
""")


async def replies_and_conversions(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """The sponsor's replies and conversions recorded in the window, oldest first."""
    return await _in_window(session, _EVENTS, window)


async def prune_events(session: AsyncSession, cutoff: datetime) -> int:
    """Delete the replies and conversions recorded before ``cutoff``; how many were."""
    result = await session.execute(
        text("DELETE FROM digest_events WHERE recorded_at < :cutoff"), {"cutoff": cutoff}
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
