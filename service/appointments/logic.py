"""What each ``appointments.v1`` event does: the appointment row, the email, the reminders.

* ``booked``: the row at ``sequence`` 0, a confirmation with a ``METHOD:REQUEST``
  invite, reminders (24 h and 1 h before unless the sponsor set other offsets).
* ``rescheduled``: ``sequence`` + 1, an update with the same UID, reminders moved.
* ``cancelled``: ``sequence`` + 1, a cancellation with a ``METHOD:CANCEL`` invite,
  reminders removed.
* ``completed``: reminders removed, no email; a feedback request
  ``APPOINTMENT_FEEDBACK_DELAY_SECONDS`` later (an ``appointment.feedback`` timer).

Reminders and the feedback request are timers (``service.appointments.followups``).
Confirmations, updates and reminders carry signed links to ask the booking
system for a reschedule or a cancellation (``service.appointments.links``).

An event that changes nothing the row holds (a replay, a second copy) sends
nothing: each rule compares against the row, locked, before it writes. Emails go
to the lead as ``service.messages`` messages (a message row and its
``messages.v1`` outbox row in the caller's transaction); the caller commits.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCompleted,
    AppointmentEvent,
    AppointmentRescheduled,
)
from service.appointments import emails, followups, outgoing, repository
from service.appointments.outgoing import Config
from service.leads.logic import normalize_email
from service.models import Appointment

log = logging.getLogger(__name__)

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
        await outgoing.send(session, config, row, emails.CONFIRMATION, "REQUEST", moment)
        await followups.schedule_reminders(session, row, moment)
        return
    if row.state != "booked":
        return  # cancelled or completed: later events change nothing
    if isinstance(event, AppointmentCancelled):
        row.state, row.sequence = "cancelled", row.sequence + 1
        row.updated_at = moment
        await outgoing.send(session, config, row, emails.CANCELLATION, "CANCEL", moment)
        await followups.cancel_reminders(session, row)
    elif isinstance(event, AppointmentCompleted):
        row.state, row.updated_at = "completed", moment
        await followups.cancel_reminders(session, row)
        await followups.schedule_feedback(session, config, row, moment)
    elif isinstance(event, AppointmentRescheduled | AppointmentBooked) and _changed(row, event):
        _update(row, event, lead)
        row.sequence += 1
        row.updated_at = moment
        await outgoing.send(session, config, row, emails.UPDATE, "REQUEST", moment)
        await followups.schedule_reminders(session, row, moment)
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
