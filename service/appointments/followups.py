"""What an appointment sets for later, on timers: reminders and the feedback request.

* Reminders (``appointment.reminder`` timers) at the offsets set on the sponsor's
  ``appointment.reminder`` type (``reminder_offsets``, minutes before the start),
  24 h and 1 h by default; each only while still ahead; moved on reschedule,
  removed on cancel or completion. The key names the offset
  (``appointment:{sponsor}:{appointment}:24h``), so setting one again moves it.
* The feedback request (an ``appointment.feedback`` timer)
  ``APPOINTMENT_FEEDBACK_DELAY_SECONDS`` after completion; once per appointment (a
  unique key, and an appointment is completed once).

Firing takes a whole claimed batch: the batch's appointments in one query, its
emails in one statement (and their outbox rows in one), so the timers role's
work per batch does not grow with the batch. A timer that no longer applies (the
appointment moved, was cancelled, or has started) fires to no effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.appointments import emails, outgoing, repository
from service.appointments.offsets import offset_name, offset_words
from service.appointments.outgoing import Config
from service.models import Appointment, MessageType
from service.timers import repository as timers
from service.timers.logic import BatchHandler
from service.timers.repository import DueTimer

REMINDER_KIND = "appointment.reminder"
FEEDBACK_KIND = "appointment.feedback"
# Minutes before the start, when the sponsor's reminder type sets none.
DEFAULT_OFFSETS = (24 * 60, 60)
# The reminders of timers set before offsets were settable name their offset only.
_NAMED = {"24h": 24 * 60, "1h": 60}


def _key(row: Appointment, name: str) -> str:
    return f"appointment:{row.sponsor_id}:{row.appointment_id}:{name}"


async def _offsets(session: AsyncSession, sponsor_id: str) -> list[int]:
    """The sponsor's reminder offsets, in minutes, farthest first."""
    reminder_type = await repository.ensure_type(
        session, sponsor_id, emails.type_values(emails.REMINDER)
    )
    return sorted(reminder_type.reminder_offsets or DEFAULT_OFFSETS, reverse=True)


def _all_reminder_keys(row: Appointment, offsets: Sequence[int]) -> list[str]:
    """The keys of every reminder the appointment may have: the offsets set now and the
    default ones (one set before the type changed fires to no effect: the revision is
    checked)."""
    return [_key(row, offset_name(m)) for m in sorted({*offsets, *DEFAULT_OFFSETS})]


async def schedule_reminders(session: AsyncSession, row: Appointment, moment: datetime) -> None:
    """Each reminder still ahead set (or moved); one already past, or no longer an
    offset of the type, removed."""
    offsets = await _offsets(session, row.sponsor_id)
    ahead: set[str] = set()
    for minutes in offsets:
        due = row.start_at - timedelta(minutes=minutes)
        if due <= moment:
            continue
        name = offset_name(minutes)
        payload = {
            "sponsor_id": row.sponsor_id,
            "appointment_id": row.appointment_id,
            "sequence": row.sequence,
            "reminder": name,
            "minutes": minutes,
        }
        await timers.schedule(session, REMINDER_KIND, _key(row, name), due, payload)
        ahead.add(_key(row, name))
    gone = [key for key in _all_reminder_keys(row, offsets) if key not in ahead]
    if gone:
        await timers.cancel(session, gone)


async def cancel_reminders(session: AsyncSession, row: Appointment) -> None:
    offsets = await _offsets(session, row.sponsor_id)
    await timers.cancel(session, _all_reminder_keys(row, offsets))


async def schedule_feedback(
    session: AsyncSession, config: Config, row: Appointment, moment: datetime
) -> None:
    payload = {"sponsor_id": row.sponsor_id, "appointment_id": row.appointment_id}
    due = moment + config.feedback_delay
    await timers.schedule(session, FEEDBACK_KIND, _key(row, "feedback"), due, payload)


def timer_handlers(config: Config) -> dict[str, BatchHandler]:
    """The timers role's handler of each kind this module sets."""

    async def reminders(session: AsyncSession, batch: Sequence[DueTimer]) -> None:
        await fire_reminders(session, config, batch)

    async def feedback(session: AsyncSession, batch: Sequence[DueTimer]) -> None:
        await fire_feedback(session, config, batch)

    return {REMINDER_KIND: BatchHandler(reminders), FEEDBACK_KIND: BatchHandler(feedback)}


async def _appointments(
    session: AsyncSession, batch: Sequence[DueTimer]
) -> dict[tuple[str, str], Appointment]:
    ids = {(t.payload["sponsor_id"], t.payload["appointment_id"]) for t in batch}
    return await repository.get_many(session, sorted(ids))


async def fire_reminders(session: AsyncSession, config: Config, batch: Sequence[DueTimer]) -> None:
    """Due reminders: each emailed only for an appointment still booked, as set, and ahead."""
    rows = await _appointments(session, batch)
    now = datetime.now(UTC)
    types: dict[str, MessageType] = {}
    messages: list[dict[str, Any]] = []
    for timer in batch:
        payload = timer.payload
        row = rows.get((payload["sponsor_id"], payload["appointment_id"]))
        if row is None or row.state != "booked" or row.sequence != payload["sequence"]:
            continue
        if row.start_at <= now:
            continue
        minutes = payload.get("minutes") or _NAMED[payload["reminder"]]
        if row.sponsor_id not in types:
            values = emails.type_values(emails.REMINDER)
            types[row.sponsor_id] = await repository.ensure_type(session, row.sponsor_id, values)
        words = offset_words(minutes)
        message_type = types[row.sponsor_id]
        messages.append(outgoing.message(config, row, message_type, None, now, reminder=words))
    await outgoing.queue(session, messages)


async def fire_feedback(session: AsyncSession, config: Config, batch: Sequence[DueTimer]) -> None:
    """Due feedback requests: each sent only for an appointment that was completed."""
    rows = await _appointments(session, batch)
    now = datetime.now(UTC)
    types: dict[str, MessageType] = {}
    messages: list[dict[str, Any]] = []
    for timer in batch:
        row = rows.get((timer.payload["sponsor_id"], timer.payload["appointment_id"]))
        if row is None or row.state != "completed":
            continue
        if row.sponsor_id not in types:
            values = emails.type_values(emails.FEEDBACK)
            types[row.sponsor_id] = await repository.ensure_type(session, row.sponsor_id, values)
        messages.append(outgoing.message(config, row, types[row.sponsor_id], None, now))
    await outgoing.queue(session, messages)
