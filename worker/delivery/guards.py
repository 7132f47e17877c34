"""The guards that stop a campaign sending: the hourly cap, the failure rate, the quota.

- The sponsor's ``hourly_send_cap``: a batch takes its sends from the hour
  before it goes out; when the hour is full it is not sent and nothing is
  released, so the campaign idles until the reconciler re-opens its window.
- ``SEND_FAILURE_PAUSE_RATIO``: a campaign whose failure ratio passes it, once
  ``SEND_FAILURE_PAUSE_MIN`` messages were tried, is paused.
- A provider quota (``QuotaExceeded``) pauses the campaign with its code; so
  does an account that cannot send (``AccountError``: a bad or restricted key,
  an unverified domain), with the provider's message, its rows left pending.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.campaigns import repository, sending_repository
from service.campaigns.lifecycle import CampaignStatus
from service.settings import Settings
from service.stats import counters
from worker.delivery.context import CampaignContext

log = logging.getLogger(__name__)


class Guards:
    """The checks around a campaign's batches; each pause is its own transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    async def within_hourly_cap(self, context: CampaignContext, count: int) -> bool:
        """Take ``count`` sends from the sponsor's hourly cap; False when the hour is full."""
        if not count or context.hourly_cap is None:
            return True
        async with self.sessions.begin() as session:
            allowed = await sending_repository.reserve_hourly_sends(
                session, context.sponsor_id, count, context.hourly_cap
            )
        if not allowed:
            log.info("sponsor %s reached its hourly cap", context.sponsor_id)
        return allowed

    async def pause(self, context: CampaignContext, reason: str) -> None:
        async with self.sessions.begin() as session:
            paused = await repository.auto_pause(session, context.campaign_id, reason)
        context.status = CampaignStatus.PAUSED  # or moved on already: no more sending either way
        if paused:
            log.warning("campaign %s paused: %s", context.campaign_id, reason)

    async def pause_if_failing(self, context: CampaignContext) -> None:
        """Auto-pause a campaign whose failure ratio passes ``SEND_FAILURE_PAUSE_RATIO``."""
        ratio = self.settings.send_failure_pause_ratio
        if ratio <= 0:
            return
        async with self.sessions() as session:
            counts = await counters.sums(session, context.campaign_id)
        attempted = counts["sent"] + counts["failed"]
        if (
            attempted >= self.settings.send_failure_pause_min
            and counts["failed"] >= ratio * attempted
        ):
            await self.pause(context, f"failure_rate: {counts['failed']} of {attempted} failed")
