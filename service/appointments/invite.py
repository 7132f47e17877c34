"""The iCalendar invite (RFC 5545, iTIP methods of RFC 5546) and the add-to-calendar links.

Built with ``icalendar`` from ``zoneinfo`` zones, never as hand-written text: the
event is written in the appointment's own zone (``DTSTART;TZID=…``) with that
zone's ``VTIMEZONE``, so a calendar shows 09:00 in Berlin as 09:00 whatever the
daylight saving rules between the booking and the meeting.

One appointment keeps one ``UID``; every change raises ``SEQUENCE``, so a
calendar replaces the event it holds instead of adding a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import icalendar

PRODID = "-//campaign-service//appointments//EN"
# The VTIMEZONE covers this much around the meeting: enough for any calendar to
# place it, small enough to keep the file short.
_ZONE_MARGIN = timedelta(days=366)
REMIND_BEFORE = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Invite:
    """What an invite says: the appointment as it now is, and its revision."""

    uid: str
    sequence: int
    title: str
    start: datetime
    end: datetime
    time_zone: str
    organizer_email: str
    organizer_name: str | None
    attendee_email: str
    attendee_name: str | None
    location: str | None = None
    join_url: str | None = None
    notes: str | None = None


def uid_of(sponsor_id: str, appointment_id: str) -> str:
    """Stable per appointment: the same for its booking, every update and its cancellation."""
    return f"{appointment_id}.{sponsor_id}@appointments.campaign-service"


def ics(invite: Invite, *, method: str, stamp: datetime | None = None) -> bytes:
    """The calendar file: ``METHOD:REQUEST`` for a booking or change, ``CANCEL`` to remove it."""
    zone = ZoneInfo(invite.time_zone)
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    event = icalendar.Event()
    event.add("uid", invite.uid)
    event.add("sequence", invite.sequence)
    event.add("dtstamp", (stamp or datetime.now(UTC)).astimezone(UTC))
    event.add("dtstart", invite.start.astimezone(zone))
    event.add("dtend", invite.end.astimezone(zone))
    event.add("summary", invite.title)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("organizer", _address(invite.organizer_email, invite.organizer_name))
    attendee = _address(invite.attendee_email, invite.attendee_name)
    attendee.params.update({"ROLE": "REQ-PARTICIPANT", "PARTSTAT": "NEEDS-ACTION", "RSVP": "TRUE"})
    event.add("attendee", attendee)
    if invite.location or invite.join_url:
        event.add("location", invite.location or invite.join_url)
    if invite.join_url:
        event.add("url", invite.join_url)
    if invite.notes:
        event.add("description", invite.notes)
    if method != "CANCEL":
        alarm = icalendar.Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", invite.title)
        alarm.add("trigger", -REMIND_BEFORE)
        event.add_component(alarm)
    calendar.add_component(event)
    calendar.add_missing_timezones(
        first_date=(invite.start - _ZONE_MARGIN).date(),
        last_date=(invite.end + _ZONE_MARGIN).date(),
    )
    return bytes(calendar.to_ical())


def _address(email: str, name: str | None) -> icalendar.vCalAddress:
    address = icalendar.vCalAddress(f"mailto:{email}")
    if name:
        address.params["CN"] = icalendar.vText(name)
    return address


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def google_link(invite: Invite) -> str:
    """Google Calendar's 'add event' page, filled in."""
    query = {
        "action": "TEMPLATE",
        "text": invite.title,
        "dates": f"{_utc(invite.start)}/{_utc(invite.end)}",
        "ctz": invite.time_zone,
        "details": invite.notes or "",
        "location": invite.location or invite.join_url or "",
    }
    return "https://calendar.google.com/calendar/render?" + urlencode(query)


def outlook_link(invite: Invite) -> str:
    """Outlook on the web's 'new event' page, filled in."""
    query = {
        "path": "/calendar/action/compose",
        "rru": "addevent",
        "subject": invite.title,
        "startdt": invite.start.astimezone(UTC).isoformat(),
        "enddt": invite.end.astimezone(UTC).isoformat(),
        "body": invite.notes or "",
        "location": invite.location or invite.join_url or "",
    }
    return "https://outlook.office.com/calendar/0/deeplink/compose?" + urlencode(query)


def local_time(moment: datetime, time_zone: str) -> str:
    """The moment as a reader in ``time_zone`` reads it: 'Thursday 1 April 2027, 09:00 (CEST)'."""
    local = moment.astimezone(ZoneInfo(time_zone))
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M} ({local.tzname()}, {time_zone})"
