"""What a lead may ask from an appointment email's links: to reschedule or to cancel.

The service does not move or cancel anything itself: the booking system owns the
appointment. A confirmed request is an ``appointment-requests.v1`` event written
to the outbox in the caller's transaction, so it is durable before the page says
it was sent. An appointment that is no longer booked, or whose start has passed,
takes no request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.appointment_requests import (
    AppointmentCancelRequested,
    AppointmentRescheduleRequested,
)
from schemas.events import TOPIC_APPOINTMENT_REQUESTS
from service import outbox
from service.appointments import repository
from service.appointments.invite import local_time
from service.appointments.links import Action, LinkClaims
from service.models import Appointment


@dataclass(frozen=True, slots=True)
class Standing:
    """What the page shows: the appointment as it now is, and whether it takes a request."""

    title: str
    when: str
    # None when a request is possible; otherwise why not (``cancelled``, ``completed``, ``past``).
    closed: str | None


async def standing(session: AsyncSession, claims: LinkClaims, now: datetime) -> Standing | None:
    """The appointment the link names; None if the service never heard of it."""
    row = await repository.get(session, claims.sponsor_id, claims.appointment_id)
    return None if row is None else _standing(row, now)


def _standing(row: Appointment, now: datetime) -> Standing:
    zone = row.details["lead"].get("time_zone") or row.time_zone
    closed = row.state if row.state != "booked" else ("past" if row.start_at <= now else None)
    return Standing(row.details["title"], local_time(row.start_at, zone), closed)


async def request(
    session: AsyncSession, claims: LinkClaims, note: str | None, now: datetime
) -> Standing | None:
    """Publish the lead's request (through the outbox) if the appointment takes one."""
    row = await repository.get(session, claims.sponsor_id, claims.appointment_id)
    if row is None:
        return None
    found = _standing(row, now)
    if found.closed is not None:
        return found
    kind = (
        AppointmentRescheduleRequested
        if claims.action is Action.RESCHEDULE
        else AppointmentCancelRequested
    )
    event = kind(
        request_id=uuid.uuid4(),
        appointment_id=row.appointment_id,
        sponsor_id=row.sponsor_id,
        sequence=row.sequence,
        lead_email=row.lead_email,
        note=(note or "").strip()[:2000] or None,
        requested_at=now,
    )
    await outbox.add(session, [(TOPIC_APPOINTMENT_REQUESTS, row.appointment_id, event.to_bytes())])
    return found
