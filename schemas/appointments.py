"""Contract of ``appointments.v1``: what happened to an appointment a lead booked with a host.

The upstream booking system publishes one event per change, keyed by the
appointment id so an appointment's events stay in order. ``type`` is the
discriminator (``appointment.booked``, ``.rescheduled``, ``.cancelled``,
``.completed``). Every event carries the whole appointment as it now is, so a
consumer that missed one still writes the right invite.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from schemas.events import _Event


class Person(BaseModel):
    """The lead (attendee) or the host (organizer)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)
    # The time zone this person reads times in; the appointment's when not given.
    time_zone: str | None = Field(default=None, max_length=64)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else _zone(value)


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


class _AppointmentEvent(_Event):
    appointment_id: str = Field(min_length=1, max_length=200)
    sponsor_id: str
    title: str = Field(max_length=300)
    start: AwareDatetime
    end: AwareDatetime
    # The IANA zone the appointment is held in; the invite's TZID.
    time_zone: str = Field(max_length=64)
    lead: Person
    host: Person
    location: str | None = Field(default=None, max_length=500)
    join_url: str | None = Field(default=None, max_length=2000)
    notes: str | None = Field(default=None, max_length=5000)
    occurred_at: datetime | None = None

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone(value)


class AppointmentBooked(_AppointmentEvent):
    type: Literal["appointment.booked"] = "appointment.booked"


class AppointmentRescheduled(_AppointmentEvent):
    type: Literal["appointment.rescheduled"] = "appointment.rescheduled"


class AppointmentCancelled(_AppointmentEvent):
    type: Literal["appointment.cancelled"] = "appointment.cancelled"


class AppointmentCompleted(_AppointmentEvent):
    type: Literal["appointment.completed"] = "appointment.completed"


AppointmentEvent = Annotated[
    AppointmentBooked | AppointmentRescheduled | AppointmentCancelled | AppointmentCompleted,
    Field(discriminator="type"),
]
appointment_events: TypeAdapter[AppointmentEvent] = TypeAdapter(AppointmentEvent)
