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
from service.campaigns import ab_repository, lifecycle, repository
from service.campaigns.ab_repository import Plan
from service.campaigns.lifecycle import Action, CampaignStatus
from service.errors import InvalidAudience
from service.kafka import Producer
from service.logs import bound
from service.models import Campaign

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
        # The batches are published once the work is done: after the statistics.
        async with outbox.unit_of_work(self.sessions, self.producer) as work:
            async with work.transaction() as session:
                campaign = await repository.get_for_update(session, campaign_id)
                if campaign is None or campaign.status != CampaignStatus.QUEUED:
                    return
                plan = await self._write_plan(session, campaign)
            if plan is None:
                return
            if plan.recipients:
                # Before the batches go out, so that the senders' queries are planned right.
                async with work.transaction() as session:
                    await repository.refresh_delivery_statistics(session, plan.recipients)
        log.info(
            "planned campaign %s: %d recipients in %d batches, %d suppressed, in %.2fs",
            campaign_id,
            plan.recipients,
            plan.batches,
            plan.suppressed,
            time.perf_counter() - started,
        )

    async def _write_plan(self, session: AsyncSession, campaign: Campaign) -> Plan | None:
        """Delivery rows, counters and the first window of batches; None if it failed."""
        try:
            plan = await self._plan_rows(session, campaign)
        except InvalidAudience as exc:
            # A stored filter that no longer parses (caps or fields changed since it
            # was accepted): retrying cannot help, so the campaign fails with the reason.
            reason = f"audience: {exc.message} ({exc.field})"
            lifecycle.apply(campaign, Action.FAIL, reason)
            log.error("campaign %s: %s", campaign.id, reason)
            return None
        campaign.total_recipients = plan.recipients
        campaign.batch_count = plan.batches
        campaign.planned_at = func.now()
        if plan.recipients:
            lifecycle.apply(campaign, Action.PLAN_TEST if campaign.ab_test else Action.PLAN)
        else:
            lifecycle.apply(campaign, Action.PLAN_EMPTY)
            campaign.completed_at = func.now()
        await repository.open_window(session, campaign, self.window)
        return plan

    async def _plan_rows(self, session: AsyncSession, campaign: Campaign) -> Plan:
        """Every recipient's row, or for an A/B test only the test share's (each with its
        variant): the rest is planned once the winner is chosen (``service.campaigns.ab``)."""
        if not campaign.ab_test:
            return await repository.plan_deliveries(session, campaign, self.batch_size)
        # The rest is planned later, by whoever chooses: it batches and releases as this did.
        campaign.ab_test = {
            **campaign.ab_test,
            "plan": {"batch_size": self.batch_size, "window": self.window},
        }
        return await ab_repository.plan_test_share(
            session,
            campaign,
            self.batch_size,
            campaign.ab_test["test_share"],
            len(campaign.ab_test["variants"]),
        )
