"""The message-sender role: hands decoded ``messages.v1`` events to delivery.

The work (load, check suppressions, render, send, record) is in
``worker.delivery.messages``; see ``docs/messages.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.messages import MessageRequested
from service.settings import Settings
from worker.delivery.messages import MessageDeliveries
from worker.lanes import MESSAGES, Lane
from worker.providers.accounts import ProviderClients
from worker.providers.base import EmailProvider
from worker.ratelimit import Pacer


class MessageSender:
    """Handles ``messages.v1``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: EmailProvider,
        settings: Settings,
        clients: ProviderClients | None = None,
    ) -> None:
        # A pace of its own: one-to-one messages do not wait behind a campaign's
        # batches. Its lane keeps it within the provider's rate beside the campaigns.
        self.pacer = Pacer(settings.provider_rate_per_second, MESSAGES)
        Lane.attach(sessions, self.pacer, MESSAGES, settings.messages_rate_share)
        self.deliveries = MessageDeliveries(sessions, provider, self.pacer, settings, clients)

    async def handle(self, events: Sequence[MessageRequested]) -> None:
        await self.deliveries.send_many(events)
