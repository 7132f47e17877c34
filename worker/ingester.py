"""The ingester role: tracking and provider events → PostgreSQL, in batches.

Thin: the runner decodes; this opens one transaction per batch, call ``service.tracking.ingest``,
then publish the status changes it queued in the outbox (the relay publishes
whatever this misses). Offsets are stored by the runner after this returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.tracking import ProviderEvent, TrackingEvent
from service import metrics, outbox
from service.kafka import Producer
from service.settings import Settings
from service.tracking.ingest import IngestResult, ingest

log = logging.getLogger(__name__)


class Ingester:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], producer: Producer, settings: Settings
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._settings = settings

    async def handle(self, events: Sequence[TrackingEvent | ProviderEvent]) -> None:
        await self.handle_events(list(events))

    async def handle_events(self, events: list[TrackingEvent | ProviderEvent]) -> IngestResult:
        async with (
            outbox.unit_of_work(self._sessions, self._producer) as work,
            work.transaction() as session,
        ):
            result = await ingest(session, self._settings, events)
        metrics.INGESTER_BATCH_SIZE.observe(len(events))
        now = datetime.now(UTC)
        for event in events:
            metrics.INGESTER_DELAY.observe(max(0.0, (now - event.occurred_at).total_seconds()))
        return result
