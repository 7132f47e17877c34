"""The ``digest.daily`` message type and the data one digest carries.

Each sponsor gets the type the first time one of its digests has something to
say, category ``notification`` (an unsubscribed or bounced address gets none),
preference category ``digests``. A sponsor changes the words by editing the type
through the message types API; the variables stay these. Every list is built
here, already in the reader's words and time zone, so the template only lays
them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from service.appointments.invite import local_time
from service.models import Message
from service.templates.sandbox import RECIPIENT_ERRORS, render, text_env

KEY = "digest.daily"
PREFERENCE = "digests"

_HTML = """\
<h2 style="margin:0 0 4px">Your daily digest</h2>
<p style="margin:0 0 16px;color:#555">{{ attributes.period }}</p>
{% if attributes.leads %}
<h3 style="margin:16px 0 8px">New qualified leads ({{ attributes.leads | length }})</h3>
<ul style="padding-left:18px">
  {% for lead in attributes.leads %}
  <li style="margin-bottom:6px"><strong>{{ lead.name or lead.email }}</strong>
      · {{ lead.intent }}<br>
      <span style="color:#555">{% if lead.name %}{{ lead.email }}{% endif %}
      {% if lead.title %} · {{ lead.title }}{% endif %}
      {% if lead.company %} · {{ lead.company }}{% endif %}</span></li>
  {% endfor %}
</ul>
{% endif %}
{% for day in attributes.days %}{% if day.appointments %}
<h3 style="margin:16px 0 8px">Appointments {{ day.label }}</h3>
<ul style="padding-left:18px">
  {% for a in day.appointments %}
  <li style="margin-bottom:6px"><strong>{{ a.time }}</strong> {{ a.title }} with {{ a.lead }}
      {% if a.host %}(host: {{ a.host }}){% endif %}</li>
  {% endfor %}
</ul>
{% endif %}{% endfor %}
{% if attributes.replies %}
<h3 style="margin:16px 0 8px">Replies ({{ attributes.replies | length }})</h3>
<ul style="padding-left:18px">
  {% for r in attributes.replies %}
  <li style="margin-bottom:6px"><strong>{{ r.who }}</strong> · {{ r.what }}<br>
      <span style="color:#555">{{ r.when }}</span></li>
  {% endfor %}
</ul>
{% endif %}
{% if attributes.conversions %}
<h3 style="margin:16px 0 8px">Conversions ({{ attributes.conversions | length }})</h3>
<ul style="padding-left:18px">
  {% for c in attributes.conversions %}
  <li style="margin-bottom:6px"><strong>{{ c.who }}</strong> · {{ c.what }}<br>
      <span style="color:#555">{{ c.when }}</span></li>
  {% endfor %}
</ul>
{% endif %}
{% if attributes.campaigns %}
<h3 style="margin:16px 0 8px">Campaigns</h3>
<ul style="padding-left:18px">
  {% for c in attributes.campaigns %}
  <li style="margin-bottom:6px"><strong>{{ c.name }}</strong>: {{ c.sent }} sent,
      {{ c.opens }} opens, {{ c.clicks }} clicks<br>
      <span style="color:#555">so far: {{ c.total_sent }} sent, {{ c.total_opened }} opened,
      {{ c.total_clicked }} clicked</span></li>
  {% endfor %}
</ul>
{% endif %}
{% if attributes.held %}
<h3 style="margin:16px 0 8px">Alerts held for this digest ({{ attributes.held | length }})</h3>
<ul style="padding-left:18px">
  {% for m in attributes.held %}
  <li style="margin-bottom:6px"><strong>{{ m.subject }}</strong><br>
      <span style="color:#555">{{ m.line }}</span></li>
  {% endfor %}
</ul>
{% endif %}
"""

VARIABLES = ("period", "leads", "days", "replies", "conversions", "campaigns", "held")


def type_values() -> dict[str, Any]:
    """The columns of the built-in ``digest.daily`` type."""
    return {
        "key": KEY,
        "category": "notification",
        # Not ``alerts``, the default of notifications: a member who wants alerts
        # daily is to get the digest that tells them, not have it held too.
        "preference_category": PREFERENCE,
        "subject": "Your digest for {{ attributes.period }}",
        "html_body": _HTML,
        "variables": [
            {"name": "period", "type": "string", "required": False, "fallback": None},
            *(
                {"name": name, "type": "list", "required": False, "fallback": []}
                for name in VARIABLES[1:]
            ),
        ],
    }


def _lead(row: dict[str, Any]) -> dict[str, Any]:
    level = row["intent_level"]
    score = f"{row['intent_score']}/100" if row["intent_score"] is not None else None
    intent = f"{level} ({score})" if level and score else (level or score or "")
    return {
        "email": row["email"],
        "name": row["name"],
        "company": row["company"],
        "title": row["title"],
        "intent": intent,
    }


def _appointment(row: dict[str, Any], zone: str) -> dict[str, Any]:
    details = row["details"]
    local = row["start_at"].astimezone(ZoneInfo(zone))
    lead = details.get("lead", {})
    host = details.get("host", {})
    return {
        "id": row["appointment_id"],
        "time": f"{local:%H:%M}",
        "when": local_time(row["start_at"], zone),
        "title": details.get("title", ""),
        "lead": lead.get("name") or row["lead_email"],
        "host": host.get("name") or host.get("email"),
    }


# A campaign's figures for the period, then its totals since it started.
_CAMPAIGN_FIGURES = (
    "name", "sent", "opens", "clicks", "total_sent", "total_opened", "total_clicked",
)  # fmt: skip


def _event(row: dict[str, Any], zone: str) -> dict[str, Any]:
    """A reply or conversion as a digest line: who, what, and when it was recorded."""
    summary = row["summary"]
    if row["kind"] == "conversion":
        amount = " ".join(str(summary[k]) for k in ("total", "currency") if k in summary)
        order = f"order {summary['order']}" if "order" in summary else "order"
        what = f"{order} paid" + (f", {amount}" if amount else "")
    else:
        what = summary.get("outcome") or row["type"]
    return {
        "who": summary.get("name") or row["email"] or "unknown",
        "email": row["email"],
        "what": what,
        "when": local_time(row["recorded_at"], zone),
        "type": row["type"],
    }


def _subject(message: Message, subjects: Mapping[str, str], sponsor_name: str) -> str:
    """The held message's subject as it would have been sent; its type key if that fails."""
    context = {"attributes": message.data, "sponsor": {"name": sponsor_name}}
    key = message.type_key or ""  # a one-off message has none, and is never held
    try:
        subject = render(text_env.from_string(subjects[key]), context).strip()
    except (*RECIPIENT_ERRORS, KeyError):
        return key
    return subject or key


def held(
    messages: Sequence[Message], subjects: Mapping[str, str], sponsor_name: str, zone: str
) -> list[dict[str, Any]]:
    """Held messages as digest lines: the subject, then when and what kind it was.

    ``subjects``: each type's subject template, by type key.
    """
    return [
        {
            "id": str(message.id),
            "subject": _subject(message, subjects, sponsor_name),
            "line": f"{local_time(message.created_at, zone)} · {message.type_key}",
        }
        for message in messages
    ]


def data(
    *,
    moment: datetime,
    zone: str,
    leads: list[dict[str, Any]],
    appointments: list[dict[str, Any]],
    campaigns: list[dict[str, Any]],
    held: list[dict[str, Any]],
    events: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """One digest's data, as ``zone`` reads it on the day of ``moment``.

    ``events``: the period's replies and conversions (``digest_events`` rows).
    """
    today = moment.astimezone(ZoneInfo(zone)).date()
    days: dict[str, list[dict[str, Any]]] = {"today": [], "tomorrow": []}
    for row in appointments:
        local_day = row["start_at"].astimezone(ZoneInfo(zone)).date()
        days["today" if local_day == today else "tomorrow"].append(_appointment(row, zone))
    return {
        "period": f"{today:%A} {today.day} {today:%B %Y}",
        "leads": [_lead(row) for row in leads],
        "days": [{"label": label, "appointments": items} for label, items in days.items()],
        "replies": [_event(r, zone) for r in events if r["kind"] == "reply"],
        "conversions": [_event(r, zone) for r in events if r["kind"] == "conversion"],
        "campaigns": [{k: r[k] for k in _CAMPAIGN_FIGURES} for r in campaigns],
        "held": held,
    }


def is_empty(values: dict[str, Any]) -> bool:
    """Nothing to tell: no lead, appointment, reply, conversion, campaign or held alert."""
    return not (
        values["leads"]
        or values["replies"]
        or values["conversions"]
        or any(day["appointments"] for day in values["days"])
        or values["campaigns"]
        or values["held"]
    )
