"""Contract of ``appointment-requests.v1``: what a lead asks of an appointment.

The lead follows the reschedule or cancel link of an appointment email and
confirms on the page; the service publishes one event per confirmation, keyed
by the appointment id, for the booking system. The booking system stays the
owner: it decides, and tells the service on ``appointments.v1`` as for any
other change. ``request_id`` is unique per confirmation, so a consumer that
reads one twice (at-least-once delivery) can tell.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas.events import _Event


class _AppointmentRequest(_Event):
    request_id: uuid.UUID
    appointment_id: str = Field(min_length=1, max_length=200)
    sponsor_id: str
    # The invite's revision the lead saw (``SEQUENCE``): a booking system may ignore a
    # request about a revision it has since changed.
    sequence: int = Field(ge=0)
    lead_email: str = Field(max_length=320)
    # What the lead wrote on the page, if anything.
    note: str | None = Field(default=None, max_length=2000)
    requested_at: datetime


class AppointmentRescheduleRequested(_AppointmentRequest):
    type: Literal["appointment.reschedule_requested"] = "appointment.reschedule_requested"


class AppointmentCancelRequested(_AppointmentRequest):
    type: Literal["appointment.cancel_requested"] = "appointment.cancel_requested"


AppointmentRequest = Annotated[
    AppointmentRescheduleRequested | AppointmentCancelRequested, Field(discriminator="type")
]
appointment_requests: TypeAdapter[AppointmentRequest] = TypeAdapter(AppointmentRequest)
