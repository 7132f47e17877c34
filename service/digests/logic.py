"""Digest rules: subscriptions checked at save, and a period's digest sent at most once.

A subscription has one timer (kind ``digest.send``, key ``digest:<id>``) set to
its next cron time in its zone; saving the subscription moves it, deleting it
removes it. When the timer fires, in the timers role's transaction:

1. the timer is set to the next cron time (so a schedule never stops, even
   when this period sends nothing);
2. the period ``[previous cron time, this one)`` is claimed in ``digest_runs``
   with ``ON CONFLICT DO NOTHING``: a replayed or re-fired timer finds it and
   stops, and a crash before the commit rolls the claim back with the rest;
3. the digest is read (replies and conversions from ``digest_events``, which
   the ``trigger`` role fills: ``service.digests.events``); an empty one is
   not sent (the claim stays, without a message); otherwise one
   ``digest.daily`` message and its outbox row are written.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.digests import DigestSubscriptionIn
from schemas.events import TOPIC_MESSAGES
from schemas.messages import MessageRequested
from schemas.triggers import StarterIn
from service import outbox
from service.appointments.repository import ensure_type
from service.digests import content, repository, schedule
from service.digests.repository import Window
from service.errors import Unprocessable
from service.leads.logic import normalize_email
from service.messages import repository as message_repository
from service.models import DigestSubscription
from service.preferences import repository as preferences
from service.sponsors import repository as sponsors
from service.timers import repository as timers
from service.timers.repository import DueTimer
from service.triggers import repository as rules
from service.triggers import starter

log = logging.getLogger(__name__)

KIND = "digest.send"
# Held messages told in one digest at most; the rest stay held for the next.
HELD_LIMIT = 50
# "Qualified" as the starter rule means it: its default, or the threshold the sponsor's rule has.
QUALIFIED_SCORE: int = StarterIn.model_fields["qualified_score_threshold"].default


def timer_key(subscription_id: uuid.UUID) -> str:
    return f"digest:{subscription_id}"


def _checked(body: DigestSubscriptionIn) -> DigestSubscriptionIn:
    """The body with its address normalized; 422 naming the first bad field."""
    try:
        email = normalize_email(body.email)
    except ValueError as exc:
        raise Unprocessable("invalid_email", str(exc), "email") from None
    schedule.zone_of(body.time_zone)
    schedule.check_cron(body.cron)
    return body.model_copy(update={"email": email})


async def _schedule_next(
    session: AsyncSession, row: DigestSubscription, after: datetime
) -> datetime:
    due = schedule.next_time(row.cron, row.time_zone, after)
    payload = {"sponsor_id": row.sponsor_id, "subscription_id": str(row.id)}
    await timers.schedule(session, KIND, timer_key(row.id), due, payload)
    return due


async def create(
    session: AsyncSession, sponsor_id: str, body: DigestSubscriptionIn
) -> DigestSubscription:
    body = _checked(body)
    row = DigestSubscription(id=uuid.uuid4(), sponsor_id=sponsor_id, **body.model_dump())
    await repository.add(session, row)
    await _schedule_next(session, row, datetime.now(UTC))
    return row


async def replace(
    session: AsyncSession, sponsor_id: str, subscription_id: uuid.UUID, body: DigestSubscriptionIn
) -> DigestSubscription:
    """The whole subscription replaced; its next digest moved to the new schedule."""
    body = _checked(body)
    row = await repository.get(session, sponsor_id, subscription_id)
    row.email, row.time_zone, row.cron = body.email, body.time_zone, body.cron
    row.updated_at = func.now()
    await repository.save(session, row)
    await _schedule_next(session, row, datetime.now(UTC))
    return row


async def delete(session: AsyncSession, sponsor_id: str, subscription_id: uuid.UUID) -> None:
    row = await repository.get(session, sponsor_id, subscription_id)
    await timers.cancel(session, [timer_key(row.id)])
    await repository.remove(session, row.id)


async def next_digest_at(
    session: AsyncSession, rows: list[DigestSubscription]
) -> dict[uuid.UUID, datetime]:
    """When each subscription's next digest is due, by id."""
    due = await timers.due_at(session, [timer_key(row.id) for row in rows])
    return {row.id: due[timer_key(row.id)] for row in rows if timer_key(row.id) in due}


async def fire(session: AsyncSession, timer: DueTimer) -> None:
    """A due digest timer: the next one set, then this period's digest sent once."""
    row = await repository.find(session, uuid.UUID(timer.payload["subscription_id"]))
    if row is None:
        return  # deleted with its timer; a copy of the timer fired late
    end = timer.due_at
    await _schedule_next(session, row, max(end, datetime.now(UTC)))
    start = schedule.previous_time(row.cron, row.time_zone, end)
    if not await repository.claim_run(session, row.id, start, end):
        log.info("digest %s for %s: already handled", row.id, start.isoformat())
        return
    await send(session, row, start, end)


async def send(
    session: AsyncSession, row: DigestSubscription, start: datetime, end: datetime
) -> uuid.UUID | None:
    """The digest of ``[start, end)`` queued to the member; None if it had nothing to say
    or the member opted out of digests (their held messages then keep waiting)."""
    if await _opted_out(session, row):
        return None
    values = await _read(session, row, start, end)
    if content.is_empty(values):
        return None
    message_type = await ensure_type(session, row.sponsor_id, content.type_values())
    message_id = uuid.uuid4()
    await message_repository.add_messages(
        session,
        [
            {
                "id": message_id,
                "sponsor_id": row.sponsor_id,
                "type_id": message_type.id,
                "type_key": message_type.key,
                "to_email": row.email,
                "data": values,
                "reply_to": None,
                "attachments": [],
                "tags": {"digest": str(row.id), "period_start": start.isoformat()},
                "status": "queued",
            }
        ],
    )
    await repository.record_message(session, row.id, start, message_id)
    await repository.mark_digested(session, [uuid.UUID(m["id"]) for m in values["held"]])
    event = MessageRequested(message_id=message_id, sponsor_id=row.sponsor_id)
    await outbox.add(session, [(TOPIC_MESSAGES, str(message_id), event.to_bytes())])
    return message_id


async def _read(
    session: AsyncSession, row: DigestSubscription, start: datetime, end: datetime
) -> dict[str, Any]:
    """What the digest of ``[start, end)`` says, as the member reads it."""
    zone = schedule.zone_of(row.time_zone)
    local_day = end.astimezone(zone).date()
    # Today and tomorrow are the member's calendar days, whatever the clocks do.
    day_start = datetime.combine(local_day, datetime.min.time(), zone)
    day_after = datetime.combine(local_day + timedelta(days=2), datetime.min.time(), zone)
    threshold = await qualified_score(session, row.sponsor_id)
    leads = await repository.qualified_leads(session, Window(row.sponsor_id, start, end), threshold)
    appointments = await repository.booked_appointments(
        session, Window(row.sponsor_id, day_start, day_after)
    )
    campaigns = await repository.campaign_results(session, Window(row.sponsor_id, start, end))
    events = await repository.replies_and_conversions(session, Window(row.sponsor_id, start, end))
    weekly = schedule.is_weekly_slot(row.time_zone, start, end)
    held = await _held(session, row, weekly=weekly)
    return content.data(
        moment=end,
        zone=row.time_zone,
        leads=leads,
        appointments=appointments,
        campaigns=campaigns,
        held=held,
        events=events,
    )


async def _opted_out(session: AsyncSession, row: DigestSubscription) -> bool:
    """Whether the member opted out of the ``digests`` preference category.

    Read here, not left to the sender: held messages are marked told when the
    digest is written, and a digest the sender would suppress tells nobody.
    """
    chosen = await preferences.rows(session, row.sponsor_id, row.email)
    return any(p.category == content.PREFERENCE and p.opted_out for p in chosen)


async def _held(
    session: AsyncSession, row: DigestSubscription, *, weekly: bool
) -> list[dict[str, Any]]:
    """The member's held messages as digest lines, the oldest ``HELD_LIMIT``; those
    held ``weekly`` only in the weekly slot (``schedule.is_weekly_slot``)."""
    messages = await repository.held_for(
        session, row.sponsor_id, row.email, limit=HELD_LIMIT, weekly=weekly
    )
    if not messages:
        return []
    # A one-off message (no type) follows no preference, so none is ever held.
    keys = sorted({m.type_key for m in messages if m.type_key})
    message_types = await message_repository.types_by_key(session, row.sponsor_id, keys)
    sponsor = await sponsors.get(session, row.sponsor_id)
    subjects = {key: t.subject for key, t in message_types.items()}
    return content.held(messages, subjects, sponsor.name, row.time_zone)


def _score_threshold(condition: Any) -> int | None:
    """The ``intent_score gte N`` of a rule's condition, under its ``all``/``any`` groups
    (one under a ``not`` says who is *not* qualified, so it is not read)."""
    if isinstance(condition, list):
        found = (_score_threshold(part) for part in condition)
        return next((n for n in found if n is not None), None)
    if not isinstance(condition, dict):
        return None
    if condition.get("field") == "intent_score" and condition.get("op") == "gte":
        value = condition.get("value")
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    return _score_threshold([condition.get(k) for k in ("all", "any") if k in condition])


async def qualified_score(session: AsyncSession, sponsor_id: str) -> int:
    """The score that qualifies a lead: the sponsor's starter rule's, else the starter default."""
    rule = await rules.rule_named(session, sponsor_id, starter.RULE_NAME)
    found = _score_threshold(rule.condition) if rule is not None else None
    return QUALIFIED_SCORE if found is None else found
