"""The sender role: hands decoded batch and test-send events to delivery.

The work — render, pace, send, record, release the next batch — is in
``worker.delivery`` (``batches.CampaignBatches``); see ``docs/sending.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import CampaignBatch, CampaignTestSend
from service.kafka import Producer
from service.settings import Settings
from worker.delivery.batches import CampaignBatches
from worker.providers.accounts import ProviderClients
from worker.providers.base import EmailProvider
from worker.ratelimit import Pacer


class Sender:
    """Handles ``campaign-batches.v1``, its retry topic and ``campaign-tests.v1``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: EmailProvider,
        pacer: Pacer,
        producer: Producer,
        settings: Settings,
        clients: ProviderClients | None = None,
    ) -> None:
        self.batches = CampaignBatches(sessions, provider, pacer, producer, settings, clients)
        self._slots = asyncio.Semaphore(settings.send_max_in_flight)

    async def handle(self, events: Sequence[CampaignBatch]) -> None:
        await asyncio.gather(*(self._bounded(event) for event in events))

    async def _bounded(self, event: CampaignBatch) -> None:
        async with self._slots:
            await self.batches.send_batch(event)

    async def send_batch(self, event: CampaignBatch) -> None:
        await self.batches.send_batch(event)

    async def send_test(self, event: CampaignTestSend) -> None:
        await self.batches.send_test(event)

    async def handle_tests(self, events: Sequence[CampaignTestSend]) -> None:
        """``campaign-tests.v1``: test sends, outside deliveries and counters."""
        for event in events:
            await self.batches.send_test(event)
