"""The lead-sync role: applies ``leads.v1`` events from upstream lead capture.

Thin: the runner decodes; this calls ``service.leads.logic.apply_event`` per event, all of a
polled batch in one transaction. Idempotent by the events' ``updated_at``: a
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
        changed = 0
        async with self.sessions.begin() as session:
            for event in events:
                changed += await logic.apply_event(session, event)
        return changed
