"""Replies and conversions: the upstream events a digest lists, kept as they are read.

The ``trigger`` role hands every polled batch here in the transaction it opens
for the batch's rules; the events that mean a reply or a conversion become one
compact row each (``digest_events``), all in one statement, keyed by the event
so a replayed or redelivered one adds nothing.

- a **reply**: a ``conversations.v1`` event of type ``conversation.replied``
  (the lead answered) or ``conversation.ended`` (a conversation with the lead
  came to an end);
- a **conversion**: an ``orders.v1`` event whose ``data.status`` is ``paid``
  (or of type ``order.paid``).

Everything else on those topics is for trigger rules only and is not kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_CONVERSATIONS, TOPIC_ORDERS
from service.digests import repository
from service.leads.logic import normalize_email
from service.triggers import condition
from service.triggers.logic import Incoming

REPLY_TYPES = frozenset({"conversation.replied", "conversation.ended"})
# Where an upstream event may carry the lead's address, first found wins.
_EMAIL_PATHS = ("data.email", "data.lead.email", "data.customer.email")
# Summary values are for one digest line, not a record of the event.
_SUMMARY_CHARS = 200


def kind_of(topic: str, view: Mapping[str, Any]) -> str | None:
    """``reply``, ``conversion``, or None for an event a digest does not list."""
    event_type = view.get("type")
    data = view.get("data") or {}
    if topic == TOPIC_CONVERSATIONS and event_type in REPLY_TYPES:
        return "reply"
    if topic == TOPIC_ORDERS and (event_type == "order.paid" or data.get("status") == "paid"):
        return "conversion"
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)[:_SUMMARY_CHARS]


def _summary(kind: str, data: Mapping[str, Any]) -> dict[str, str]:
    if kind == "conversion":
        fields = {
            "order": data.get("order_number") or data.get("order_id"),
            "total": data.get("total"),
            "currency": data.get("currency"),
        }
    else:
        fields = {
            "name": data.get("customer_name") or condition.lookup(data, "lead.name"),
            "outcome": data.get("outcome") or data.get("summary"),
        }
    return {k: t for k, v in fields.items() if (t := _text(v)) is not None}


def _email(view: Mapping[str, Any]) -> str | None:
    """The lead's address, normalized as leads' are; None if the event has no valid one."""
    for path in _EMAIL_PATHS:
        value = condition.lookup(view, path)
        if isinstance(value, str) and value:
            try:
                return normalize_email(value)
            except ValueError:
                return None
    return None


def row(
    topic: str, event_id: str, sponsor_id: str, view: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The ``digest_events`` row of one event, or None if it is neither reply nor conversion."""
    kind = kind_of(topic, view)
    if kind is None:
        return None
    return {
        "topic": topic,
        "event_id": event_id,
        "sponsor_id": sponsor_id,
        "kind": kind,
        "type": str(view.get("type"))[:100],
        "email": _email(view),
        "summary": _summary(kind, view.get("data") or {}),
    }


async def keep(session: AsyncSession, events: Sequence[Incoming]) -> int:
    """Keep a polled batch's replies and conversions; how many were new."""
    rows = [r for e in events if (r := row(e.topic, e.event_id, e.sponsor_id, e.view)) is not None]
    return await repository.add_events(session, rows)
