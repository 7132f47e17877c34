"""Tracking of transactional messages: which events are about a message, and
what they do to it.

Messages are their own ledger beside campaign deliveries (see docs/messages.md,
"Tracking"): our pixel and redirect carry message tokens, so their events
carry a ``message_id``; the provider echoes the ``campaign_id`` tag the sender
set to ``message-<id>``. The ingester hands a batch's message events here
(``ingest``) before the campaign steps, in the same transaction:

1. find each event's message (one query); a provider event whose message is
   gone, or whose email id is another message's, goes back to the campaign
   steps, which keep it as unmatched and still suppress the address;
2. log it in ``message_events`` (``ON CONFLICT DO NOTHING``: a replay is new to
   nothing further);
3. merge the new events per message: first times with ``LEAST``, the status
   forward only (``STATUS_ORDER``), so the order of arrival does not matter;
   opens and clicks of machines are logged but move nothing;
4. suppress the address for the sponsor on a hard bounce, a complaint or a
   refusal, as for a campaign's delivery.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.tracking import ProviderEvent, TrackingEvent
from service.messages import events_repository as repository
from service.messages.events_repository import MessageRef
from service.settings import Settings
from service.tracking import repository as tracking_repository
from service.tracking.unmatched import suppression_of

TAG_PREFIX = "message-"

# Forward-only: a message never moves to a lower rank. The sender alone moves
# a message out of ``queued``; the first times an earlier event set then decide
# where it starts (``repository.record_outcome``).
STATUS_ORDER = (
    "queued", "sent", "delivered", "opened", "clicked", "failed", "suppressed", "bounced",
    "complained",
)  # fmt: skip
_RANK = {status: rank for rank, status in enumerate(STATUS_ORDER)}

# Provider event → the message status it implies.
_STATUS_OF = {
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
    "failed": "failed",
    "suppressed": "suppressed",
}

Event = TrackingEvent | ProviderEvent


def tracking_tag(message_id: uuid.UUID) -> str:
    """The provider tag that names a message (sent where a campaign's id goes)."""
    return f"{TAG_PREFIX}{message_id}"


def message_of(e: Event) -> uuid.UUID | None:
    """The message an event is about, or None for a campaign delivery's."""
    if isinstance(e, TrackingEvent):
        return e.message_id
    tag = e.tags.get("campaign_id", "")
    if not tag.startswith(TAG_PREFIX):
        return None
    try:
        return uuid.UUID(tag[len(TAG_PREFIX) :])
    except ValueError:
        return None


def split(events: list[Event]) -> tuple[list[Event], list[tuple[Event, uuid.UUID]]]:
    """(the campaign deliveries' events, the messages' events with their message)."""
    campaign: list[Event] = []
    messages: list[tuple[Event, uuid.UUID]] = []
    for e in events:
        message_id = message_of(e)
        if message_id is None:
            campaign.append(e)
        else:
            messages.append((e, message_id))
    return campaign, messages


@dataclass
class _Change:
    """What a batch's new events change on one message."""

    status: str | None = None
    first: dict[str, datetime] = field(default_factory=dict)
    note: str | None = None

    def move(self, status: str) -> None:
        if self.status is None or _RANK[status] > _RANK[self.status]:
            self.status = status

    def at(self, name: str, when: datetime) -> None:
        if name not in self.first or when < self.first[name]:
            self.first[name] = when


async def ingest(
    session: AsyncSession, settings: Settings, events: list[tuple[Event, uuid.UUID]]
) -> tuple[int, list[ProviderEvent]]:
    """Steps 1–4 for one batch; (events logged, provider events to keep as unmatched)."""
    refs = await repository.message_refs(session, sorted({m for _, m in events}))
    rows: list[dict[str, Any]] = []
    unmatched: list[ProviderEvent] = []
    for e, message_id in events:
        ref = refs.get(message_id)
        if isinstance(e, ProviderEvent) and (
            ref is None or (e.email_id and ref.provider_message_id not in (None, e.email_id))
        ):
            unmatched.append(e)
            continue
        if ref is not None:
            rows.append(_row(e, ref, settings))
    new_ids = await repository.insert_events(session, rows)
    changes: dict[uuid.UUID, _Change] = {}
    suppress: list[tuple[str | None, str, str, str]] = []
    for row in rows:
        if row["event_id"] in new_ids:
            e, ref = row["_event"], row["_ref"]
            _merge(changes.setdefault(ref.id, _Change()), e, row["is_machine"])
            why = suppression_of(e) if isinstance(e, ProviderEvent) else None
            if why is not None and why[0] != "unsubscribed":  # preferences decide those
                suppress.append((ref.sponsor_id, ref.to_email, *why))
    await repository.apply(
        session, [(message_id, c.status, c.first, c.note) for message_id, c in changes.items()]
    )
    await tracking_repository.add_suppressions(session, suppress)
    return len(new_ids), unmatched


def _merge(change: _Change, e: Event, machine: bool) -> None:
    """Step 3 for one new event."""
    if isinstance(e, TrackingEvent):
        if not machine:
            engaged = "opened" if e.type == "open" else "clicked"
            change.move(engaged)
            change.at(f"{engaged}_at", e.occurred_at)
        return
    if e.type == "bounced":
        if (e.bounce_type or "").lower() == "permanent":
            change.move("bounced")
            change.at("bounced_at", e.occurred_at)
        else:  # transient: a note, the message may still arrive
            change.note = f"bounced ({e.bounce_type or 'transient'}): {e.detail or ''}".strip()
        return
    implied = _STATUS_OF.get(e.type)
    if implied is None:
        return
    status = implied
    change.move(status)
    if status in ("delivered", "opened", "clicked", "complained"):
        change.at(f"{status}_at", e.occurred_at)
    if status in ("failed", "suppressed") and e.detail:
        change.note = e.detail


def _row(e: Event, ref: MessageRef, settings: Settings) -> dict[str, Any]:
    """Step 2: the ``message_events`` row of one event."""
    payload: dict[str, Any]
    position = None
    machine: str | None = None
    if isinstance(e, TrackingEvent):
        machine = e.machine
        if (
            machine is None
            and e.type == "click"
            and ref.sent_at is not None
            and (e.occurred_at - ref.sent_at).total_seconds()
            < settings.tracking_machine_click_seconds
        ):
            machine = "early_click"
        payload = {"source": "tracking"}
        if machine:
            payload["machine"] = machine
        if e.type == "click":
            position = e.position
    else:
        payload = {"source": e.provider, "provider_type": e.provider_type, "email_id": e.email_id}
        if e.bounce_type:
            payload["bounce_type"] = e.bounce_type
        if e.detail:
            payload["detail"] = e.detail
        if e.link and e.link in ref.links:
            position = ref.links.index(e.link)
    return {
        "event_id": e.event_id,
        "message_id": ref.id,
        "type_id": ref.type_id,
        "type": e.type,
        "occurred_at": e.occurred_at,
        "link_position": position,
        "is_machine": machine is not None,
        "ip_hash": e.ip_hash if isinstance(e, TrackingEvent) else None,
        "payload": orjson.dumps(payload).decode(),
        "_event": e,
        "_ref": ref,
    }
