"""What each ``appointments.v1`` event does: the appointment row, the email, the reminders.

* ``booked``: the row at ``sequence`` 0, a confirmation with a ``METHOD:REQUEST``
  invite, reminders 24 h and 1 h before (each only if still ahead).
* ``rescheduled``: ``sequence`` + 1, an update with the same UID, reminders moved.
* ``cancelled``: ``sequence`` + 1, a cancellation with a ``METHOD:CANCEL`` invite,
  reminders removed.
* ``completed``: reminders removed, no email; a feedback request
  ``APPOINTMENT_FEEDBACK_DELAY_SECONDS`` later (an ``appointment.feedback`` timer).

Reminders are sent at the offsets set on the sponsor's ``appointment.reminder``
type (``reminder_offsets``, minutes before the start), 24 h and 1 h by default.
Confirmations, updates and reminders carry signed links to ask the booking
system for a reschedule or a cancellation (``service.appointments.links``).

An event that changes nothing the row holds (a replay, a second copy) sends
nothing: each rule compares against the row, locked, before it writes. Emails go
to the lead as ``service.messages`` messages (a message row and its
``messages.v1`` outbox row in the caller's transaction); the caller commits.
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCompleted,
    AppointmentEvent,
    AppointmentRescheduled,
)
from schemas.events import TOPIC_MESSAGES
from schemas.messages import MessageRequested
from service import outbox
from service.appointments import emails, repository
from service.appointments.invite import Invite, ics, uid_of
from service.appointments.links import Action, Links
from service.appointments.offsets import offset_name, offset_words
from service.leads.logic import normalize_email
from service.messages.repository import add_messages
from service.models import Appointment
from service.settings import Settings
from service.timers import repository as timers
from service.timers.logic import Handler
from service.timers.repository import DueTimer

log = logging.getLogger(__name__)

REMINDER_KIND = "appointment.reminder"
FEEDBACK_KIND = "appointment.feedback"
# Minutes before the start, when the sponsor's reminder type sets none.
DEFAULT_OFFSETS = (24 * 60, 60)


@dataclass(frozen=True, slots=True)
class Config:
    """What the rules take from the settings."""

    links: Links
    feedback_delay: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Config:
        delay = timedelta(seconds=settings.appointment_feedback_delay_seconds)
        return cls(Links.from_settings(settings), delay)


# What an update email is sent for; the times are compared as instants.
_MEANINGFUL = ("title", "time_zone", "location", "join_url", "notes", "host", "lead")


async def handle(
    session: AsyncSession, event: AppointmentEvent, config: Config, now: datetime | None = None
) -> None:
    """Apply one event in the caller's transaction."""
    moment = now or datetime.now(UTC)
    if not await repository.sponsor_exists(session, event.sponsor_id):
        log.warning("appointment event for unknown sponsor %r dropped", event.sponsor_id)
        return
    try:
        lead = normalize_email(event.lead.email)
    except ValueError:
        log.warning(
            "appointment %s: lead address %r refused", event.appointment_id, event.lead.email
        )
        return
    row = await repository.get_for_update(session, event.sponsor_id, event.appointment_id)
    if row is None:
        if isinstance(event, AppointmentCancelled | AppointmentCompleted):
            return  # never booked here: nothing to take back
        row = _new_row(event, lead)
        await repository.add(session, row)
        await _send(session, config, row, emails.CONFIRMATION, "REQUEST", moment)
        await _schedule_reminders(session, row, moment)
        return
    if row.state != "booked":
        return  # cancelled or completed: later events change nothing
    if isinstance(event, AppointmentCancelled):
        row.state, row.sequence = "cancelled", row.sequence + 1
        row.updated_at = moment
        await _send(session, config, row, emails.CANCELLATION, "CANCEL", moment)
        await timers.cancel(session, await _reminder_keys(session, row))
    elif isinstance(event, AppointmentCompleted):
        row.state, row.updated_at = "completed", moment
        await timers.cancel(session, await _reminder_keys(session, row))
        await _schedule_feedback(session, config, row, moment)
    elif isinstance(event, AppointmentRescheduled | AppointmentBooked) and _changed(row, event):
        _update(row, event, lead)
        row.sequence += 1
        row.updated_at = moment
        await _send(session, config, row, emails.UPDATE, "REQUEST", moment)
        await _schedule_reminders(session, row, moment)
    await session.flush()


def _details(event: AppointmentEvent) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude={"type", "occurred_at"})


def _new_row(event: AppointmentEvent, lead: str) -> Appointment:
    row = Appointment(sponsor_id=event.sponsor_id, appointment_id=event.appointment_id)
    row.sequence, row.state = 0, "booked"
    _update(row, event, lead)
    return row


def _update(row: Appointment, event: AppointmentEvent, lead: str) -> None:
    row.start_at, row.end_at, row.time_zone = event.start, event.end, event.time_zone
    row.lead_email = lead
    row.details = _details(event)


def _changed(row: Appointment, event: AppointmentEvent) -> bool:
    new = _details(event)
    return any(row.details.get(name) != new.get(name) for name in _MEANINGFUL) or (
        row.start_at != event.start or row.end_at != event.end
    )


def invite_of(row: Appointment) -> Invite:
    """The invite as the row now says it."""
    details = row.details
    return Invite(
        uid=uid_of(row.sponsor_id, row.appointment_id),
        sequence=row.sequence,
        title=details["title"],
        start=row.start_at,
        end=row.end_at,
        time_zone=row.time_zone,
        organizer_email=details["host"]["email"],
        organizer_name=details["host"].get("name"),
        attendee_email=row.lead_email,
        attendee_name=details["lead"].get("name"),
        location=details.get("location"),
        join_url=details.get("join_url"),
        notes=details.get("notes"),
    )


async def _send(
    session: AsyncSession,
    config: Config,
    row: Appointment,
    type_key: str,
    method: str | None,
    moment: datetime,
    *,
    reminder: str | None = None,
) -> None:
    """Queue one email to the lead: a message row and its outbox row."""
    message_type = await repository.ensure_type(
        session, row.sponsor_id, emails.type_values(type_key)
    )
    invite = invite_of(row)
    reader_zone = row.details["lead"].get("time_zone") or row.time_zone
    attachments = []
    if method is not None:
        content = ics(invite, method=method, stamp=moment)
        attachments.append(
            {
                "filename": "invite.ics",
                "content_type": f"text/calendar; method={method}",
                "content": base64.b64encode(content).decode(),
            }
        )
    message_id = uuid.uuid4()
    await add_messages(
        session,
        [
            {
                "id": message_id,
                "sponsor_id": row.sponsor_id,
                "type_id": message_type.id,
                "type_key": message_type.key,
                "to_email": row.lead_email,
                "data": emails.data(invite, reader_zone, reminder=reminder)
                | _links(config, row, type_key),
                "reply_to": invite.organizer_email,
                "attachments": attachments,
                "tags": {"appointment_id": row.appointment_id, "sequence": str(row.sequence)},
                "status": "queued",
            }
        ],
    )
    event = MessageRequested(message_id=message_id, sponsor_id=row.sponsor_id)
    await outbox.add(session, [(TOPIC_MESSAGES, str(message_id), event.to_bytes())])


def _links(config: Config, row: Appointment, type_key: str) -> dict[str, str]:
    """The reschedule and cancel links, in every email about an appointment still to come."""
    if type_key in (emails.CANCELLATION, emails.FEEDBACK):
        return {}
    return {
        f"{action}_url": config.links.url(action, row.sponsor_id, row.appointment_id)
        for action in Action
    }


def _reminder_key(row: Appointment, name: str) -> str:
    return f"appointment:{row.sponsor_id}:{row.appointment_id}:{name}"


async def _offsets(session: AsyncSession, sponsor_id: str) -> list[int]:
    """The sponsor's reminder offsets, in minutes, farthest first."""
    reminder_type = await repository.ensure_type(
        session, sponsor_id, emails.type_values(emails.REMINDER)
    )
    return sorted(reminder_type.reminder_offsets or DEFAULT_OFFSETS, reverse=True)


async def _reminder_keys(session: AsyncSession, row: Appointment) -> list[str]:
    return _all_reminder_keys(row, await _offsets(session, row.sponsor_id))


def _all_reminder_keys(row: Appointment, offsets: list[int]) -> list[str]:
    """The keys of every reminder the appointment may have: the offsets set now and
    the default ones (a reminder set before the type changed fires to no effect:
    ``fire_reminder`` checks the revision)."""
    return [_reminder_key(row, offset_name(m)) for m in sorted({*offsets, *DEFAULT_OFFSETS})]


async def _schedule_reminders(session: AsyncSession, row: Appointment, moment: datetime) -> None:
    """Each reminder still ahead set (or moved); one already past, or no longer an
    offset of the type, removed."""
    offsets = await _offsets(session, row.sponsor_id)
    ahead: set[str] = set()
    for minutes in offsets:
        due = row.start_at - timedelta(minutes=minutes)
        if due <= moment:
            continue
        name = offset_name(minutes)
        key = _reminder_key(row, name)
        payload = {
            "sponsor_id": row.sponsor_id,
            "appointment_id": row.appointment_id,
            "sequence": row.sequence,
            "reminder": name,
            "minutes": minutes,
        }
        await timers.schedule(session, REMINDER_KIND, key, due, payload)
        ahead.add(key)
    gone = [key for key in _all_reminder_keys(row, offsets) if key not in ahead]
    if gone:
        await timers.cancel(session, gone)


async def _schedule_feedback(
    session: AsyncSession, config: Config, row: Appointment, moment: datetime
) -> None:
    payload = {"sponsor_id": row.sponsor_id, "appointment_id": row.appointment_id}
    key = _reminder_key(row, "feedback")
    await timers.schedule(session, FEEDBACK_KIND, key, moment + config.feedback_delay, payload)


def timer_handlers(config: Config) -> dict[str, Handler]:
    """The timers role's handler of each kind this module sets."""

    async def reminder(session: AsyncSession, timer: DueTimer) -> None:
        await fire_reminder(session, config, timer)

    async def feedback(session: AsyncSession, timer: DueTimer) -> None:
        await fire_feedback(session, config, timer)

    return {REMINDER_KIND: reminder, FEEDBACK_KIND: feedback}


async def fire_reminder(session: AsyncSession, config: Config, timer: DueTimer) -> None:
    """A due reminder: emailed only for an appointment still booked, as set, and ahead."""
    payload = timer.payload
    row = await repository.get(session, payload["sponsor_id"], payload["appointment_id"])
    if row is None or row.state != "booked" or row.sequence != payload["sequence"]:
        return
    now = datetime.now(UTC)
    if row.start_at <= now:
        return
    # A timer set before offsets were settable names its reminder only.
    minutes = payload.get("minutes") or {"24h": 24 * 60, "1h": 60}[payload["reminder"]]
    words = offset_words(minutes)
    await _send(session, config, row, emails.REMINDER, None, now, reminder=words)


async def fire_feedback(session: AsyncSession, config: Config, timer: DueTimer) -> None:
    """A due feedback request: sent only for an appointment that was completed."""
    payload = timer.payload
    row = await repository.get(session, payload["sponsor_id"], payload["appointment_id"])
    if row is None or row.state != "completed":
        return
    await _send(session, config, row, emails.FEEDBACK, None, datetime.now(UTC))
