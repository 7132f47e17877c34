"""The ingester role: tracking and provider events → PostgreSQL, in batches.

Thin: decode, open one transaction per batch, call ``service.tracking.ingest``,
then publish the status changes it queued in the outbox (the relay publishes
whatever this misses). Offsets are stored by the runner after this returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import confluent_kafka
import orjson
import pydantic
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.tracking import ProviderEvent, TrackingEvent
from service import metrics, outbox
from service.kafka import Producer
from service.settings import Settings
from service.tracking.ingest import IngestResult, ingest

log = logging.getLogger(__name__)

_TRACKING_TYPES = frozenset({"open", "click"})


def decode(value: bytes | None) -> TrackingEvent | ProviderEvent | None:
    """One event from either topic; None (logged) for a message no version of us wrote."""
    if not value:
        return None
    try:
        raw = orjson.loads(value)
        if isinstance(raw, dict) and raw.get("type") in _TRACKING_TYPES:
            return TrackingEvent.model_validate(raw)
        return ProviderEvent.model_validate(raw)
    except (orjson.JSONDecodeError, pydantic.ValidationError) as exc:
        log.error("ingester: skipping undecodable event: %s", exc)
        return None


class Ingester:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], producer: Producer, settings: Settings
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._settings = settings

    async def handle(self, messages: Sequence[confluent_kafka.Message]) -> None:
        events = [e for m in messages if (e := decode(m.value())) is not None]
        await self.handle_events(events)

    async def handle_events(self, events: list[TrackingEvent | ProviderEvent]) -> IngestResult:
        async with self._sessions.begin() as session:
            result = await ingest(session, self._settings, events)
        await outbox.publish(self._sessions, self._producer, result.outbox_ids)
        metrics.INGESTER_BATCH_SIZE.observe(len(events))
        now = datetime.now(UTC)
        for event in events:
            metrics.INGESTER_DELAY.observe(max(0.0, (now - event.occurred_at).total_seconds()))
        return result
