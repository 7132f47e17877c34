"""The built-in message types of appointment emails, and the data each message carries.

Each sponsor gets these types the first time one of its appointments needs one
(``appointment.confirmation``, ``.update``, ``.cancellation``, ``.reminder``,
``.feedback``),
transactional, so an unsubscribe does not stop them. A sponsor changes the words
by editing the type through the message types API; the variables stay these.
"""

from __future__ import annotations

from typing import Any

from service.appointments.invite import Invite, google_link, local_time, outlook_link

CONFIRMATION = "appointment.confirmation"
UPDATE = "appointment.update"
CANCELLATION = "appointment.cancellation"
REMINDER = "appointment.reminder"
FEEDBACK = "appointment.feedback"

VARIABLES = (
    "title",
    "when",
    "ends",
    "host_name",
    "location",
    "join_url",
    "notes",
    "google_url",
    "outlook_url",
    "reminder",
    "reschedule_url",
    "cancel_url",
)

_DETAILS = """
<p><strong>{{ attributes.title }}</strong><br>
{{ attributes.when }} to {{ attributes.ends }}</p>
{% if attributes.host_name %}<p>With {{ attributes.host_name }}</p>{% endif %}
{% if attributes.location %}<p>Where: {{ attributes.location }}</p>{% endif %}
{% if attributes.join_url %}
<p><a href="{{ attributes.join_url }}">Join the meeting</a></p>
{% endif %}
{% if attributes.notes %}<p>{{ attributes.notes }}</p>{% endif %}
"""
_ADD = """
<p>Add it to your calendar: the attached invite, or
<a href="{{ attributes.google_url }}">Google Calendar</a> ·
<a href="{{ attributes.outlook_url }}">Outlook</a></p>
"""

_CHANGE = """
<p>Need another time? <a href="{{ attributes.reschedule_url }}">Ask to reschedule</a> ·
<a href="{{ attributes.cancel_url }}">Ask to cancel</a></p>
"""

_TYPES: dict[str, tuple[str, str]] = {
    CONFIRMATION: (
        "Confirmed: {{ attributes.title }}, {{ attributes.when }}",
        "<p>Your appointment is booked.</p>" + _DETAILS + _ADD + _CHANGE,
    ),
    UPDATE: (
        "Updated: {{ attributes.title }}, now {{ attributes.when }}",
        "<p>Your appointment has moved.</p>" + _DETAILS + _ADD + _CHANGE,
    ),
    CANCELLATION: (
        "Cancelled: {{ attributes.title }}, {{ attributes.when }}",
        "<p>This appointment is cancelled.</p>" + _DETAILS,
    ),
    REMINDER: (
        "Reminder: {{ attributes.title }} {{ attributes.reminder }}, {{ attributes.when }}",
        "<p>Your appointment is {{ attributes.reminder }}.</p>" + _DETAILS + _CHANGE,
    ),
    FEEDBACK: (
        "How was {{ attributes.title }}?",
        "<p>Thank you for your time with {{ attributes.host_name }}.</p>"
        "<p>How was <strong>{{ attributes.title }}</strong>? Reply to this email and tell "
        "us: every answer is read.</p>",
    ),
}


def type_values(key: str) -> dict[str, Any]:
    """The columns of the built-in type ``key``."""
    subject, html = _TYPES[key]
    return {
        "key": key,
        "category": "transactional",
        # Reminders follow the recipient's ``reminders`` preference; the others are
        # about a booking the recipient made, so they always go.
        "preference_category": "reminders" if key == REMINDER else None,
        "subject": subject,
        "html_body": html.strip(),
        "variables": [
            {"name": name, "type": "string", "required": False, "fallback": None}
            for name in VARIABLES
        ],
    }


def data(invite: Invite, reader_zone: str, *, reminder: str | None = None) -> dict[str, Any]:
    """A message's data: times as the recipient reads them, links to add the event."""
    values: dict[str, Any] = {
        "title": invite.title,
        "when": local_time(invite.start, reader_zone),
        "ends": local_time(invite.end, reader_zone),
        "host_name": invite.organizer_name or invite.organizer_email,
        "location": invite.location,
        "join_url": invite.join_url,
        "notes": invite.notes,
        "google_url": google_link(invite),
        "outlook_url": outlook_link(invite),
        "reminder": reminder,
    }
    return {name: value for name, value in values.items() if value is not None}
