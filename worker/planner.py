"""The planner role: turns a queued campaign into delivery rows and batch messages."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import CampaignQueued
from service import metrics, outbox
from service.campaigns import repository
from service.errors import InvalidAudience
from service.kafka import Producer
from service.logs import bound

log = logging.getLogger(__name__)


class Planner:
    """Idempotent on the campaign's status: only a ``queued`` campaign is planned."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        batch_size: int,
        window: int,
    ) -> None:
        self.sessions = sessions
        self.producer = producer
        self.batch_size = batch_size
        self.window = window

    async def handle(self, events: Sequence[CampaignQueued]) -> None:
        for event in events:
            await self.plan(event.campaign_id)

    async def plan(self, campaign_id: uuid.UUID) -> None:
        with bound(campaign_id=str(campaign_id)), metrics.PLANNER_DURATION.time():
            await self._plan(campaign_id)

    async def _plan(self, campaign_id: uuid.UUID) -> None:
        started = time.perf_counter()
        async with self.sessions.begin() as session:
            campaign = await repository.get_for_update(session, campaign_id)
            if campaign is None or campaign.status != "queued":
                return
            try:
                plan = await repository.plan_deliveries(session, campaign, self.batch_size)
            except InvalidAudience as exc:
                # A stored filter that no longer parses (caps or fields changed since it
                # was accepted): retrying cannot help, so the campaign fails with the reason.
                campaign.status = "failed"
                campaign.status_reason = f"audience: {exc.message} ({exc.field})"
                campaign.updated_at = func.now()
                log.error("campaign %s: %s", campaign_id, campaign.status_reason)
                return
            campaign.total_recipients = plan.recipients
            campaign.batch_count = plan.batches
            campaign.planned_at = func.now()
            campaign.updated_at = func.now()
            if plan.recipients:
                campaign.status = "sending"
            else:
                campaign.status = "sent"
                campaign.completed_at = func.now()
            outbox_ids = await repository.open_window(session, campaign, self.window)
        if plan.recipients:
            # Before the batches go out, so that the senders' queries are planned right.
            async with self.sessions.begin() as session:
                await repository.refresh_delivery_statistics(session, plan.recipients)
        log.info(
            "planned campaign %s: %d recipients in %d batches, %d suppressed, in %.2fs",
            campaign_id,
            plan.recipients,
            plan.batches,
            plan.suppressed,
            time.perf_counter() - started,
        )
        await outbox.publish(self.sessions, self.producer, outbox_ids)
