"""The trigger role: applies sponsors' trigger rules to upstream events.

Thin: the runner decodes (``leads.v1`` as ``schemas.leads``, the other trigger
topics as ``schemas.triggers.DomainEvent``) into one ``Incoming`` shape; a
polled batch is handed to ``service.triggers.logic.apply`` in one unit of
work, which also keeps the batch's replies and conversions for the digests
(``service.digests.events``), and whose outbox rows (the queued messages)
are published once it commits.
See ``docs/messages.md#triggers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.leads import lead_events
from schemas.triggers import DomainEvent
from service import outbox
from service.digests import events as digest_events
from service.kafka import Producer
from service.settings import Settings
from service.triggers.logic import Incoming, apply


def lead_decoder(topic: str) -> Callable[[bytes], Incoming]:
    """``leads.v1`` → rules' view: the lead as sent (``id`` is the event id)."""

    def decode(payload: bytes) -> Incoming:
        event = lead_events.validate_json(payload)
        view = event.model_dump(mode="json")
        return Incoming(topic, event.id, event.sponsor_id, view, event.updated_at)

    return decode


def domain_decoder(topic: str) -> Callable[[bytes], Incoming]:
    """A generic event → rules' view: ``event_id``, ``sponsor_id``, ``type``, ``data``;
    its ``previous`` data sits where ``changed_to`` looks for it (``previous.data``)."""

    def decode(payload: bytes) -> Incoming:
        event = DomainEvent.model_validate_json(payload)
        view: dict[str, Any] = event.model_dump(mode="json", exclude={"previous"})
        if event.previous is not None:
            view["previous"] = {"data": event.previous}
        return Incoming(topic, event.event_id, event.sponsor_id, view)

    return decode


class Triggers:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], producer: Producer, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.producer = producer
        self.settings = settings

    async def handle(self, events: Sequence[Incoming]) -> None:
        if not events:
            return
        async with (
            outbox.unit_of_work(self.sessions, self.producer) as work,
            work.transaction() as session,
        ):
            # Replies and conversions kept for the digests, in the same transaction:
            # a batch replayed after a crash keeps them once (the event is the key).
            await digest_events.keep(session, events)
            await apply(session, self.settings, events)
