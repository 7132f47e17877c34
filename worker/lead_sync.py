"""The lead-sync role: applies ``leads.v1`` events from upstream lead capture.

Thin: the runner decodes; this hands a polled batch to
``service.leads.logic.apply_events``, in one transaction (event by event, or
set-based when the batch is large). Idempotent by the events' ``updated_at``: a
duplicate or an older event changes nothing, and a deletion leaves a tombstone
so an older upsert arriving later cannot bring the lead back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.leads import LeadDeleted, LeadUpserted
from service.leads import logic

log = logging.getLogger(__name__)


class LeadSync:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def handle(self, events: Sequence[LeadUpserted | LeadDeleted]) -> None:
        if events:
            await self.apply(events)

    async def apply(self, events: Sequence[LeadUpserted | LeadDeleted]) -> int:
        """Apply events in one transaction; returns how many changed something."""
        async with self.sessions.begin() as session:
            return await logic.apply_events(session, events)
