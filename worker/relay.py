"""The relay role: outbox publishing and the reconciler.

One relay leads at a time (a PostgreSQL advisory lock held on a dedicated
connection); the others wait to take over. Every cycle the leader publishes
outbox rows the writers' fast path left behind (scheduled campaigns start on
timers: ``service.campaigns.scheduler``); every ``RECONCILE_INTERVAL_SECONDS`` it re-creates
missing topics and re-drives campaigns that stopped moving, so a broker that
lost its data, a lost message or a poison batch never strands a campaign, and
deletes the provider templates of campaigns sent or cancelled more than
``RESEND_TEMPLATE_GRACE_SECONDS`` ago; every
``RETENTION_INTERVAL_SECONDS`` it keeps the partitions of deliveries and raw
events (``service/retention``): created ahead, dropped past retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service import metrics, outbox
from service.campaigns import (
    lifecycle,
    logic,
    reconciler_repository,
    repository,
    template_repository,
)
from service.campaigns.lifecycle import Action, CampaignStatus
from service.errors import ProviderError, RateLimited
from service.kafka import Producer, create_topics
from service.retention import logic as retention
from service.settings import Settings
from worker.providers.base import StoredTemplateProvider, TemplateProvider
from worker.ratelimit import Pacer

log = logging.getLogger(__name__)

# Rows younger than this are probably being published by their writer right now.
STALE_AFTER_SECONDS = 2.0
LEADER_LOCK_KEY = 0x63616D70  # "camp"


class Relay:
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        settings: Settings,
        templates: TemplateProvider | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.producer = producer
        self.settings = settings
        self.templates = templates
        # Template deletes count against the provider's rate like sends.
        self.pacer = pacer or Pacer(settings.provider_rate_per_second)
        self._leader: AsyncConnection | None = None
        self._reconciled_at = 0.0
        self._maintained_at = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                busy = False
                try:
                    if await self._lead():
                        busy = await self.cycle()
                except Exception as exc:
                    log.warning("relay: %s", exc)
                if not busy:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.relay_interval_seconds)
        finally:
            await self._resign()

    async def _lead(self) -> bool:
        """True while this process holds the leader lock (re-taken after a lost connection)."""
        if self._leader is not None:
            try:
                await self._leader.execute(text("SELECT 1"))
                return True
            except Exception:
                await self._resign()
        connection = await self.engine.connect()
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        locked = await connection.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}
        )
        if not locked:
            await connection.close()
            return False
        self._leader = connection
        log.info("relay: leading")
        return True

    async def _resign(self) -> None:
        if self._leader is not None:
            with contextlib.suppress(Exception):
                await self._leader.close()
            self._leader = None

    async def cycle(self) -> bool:
        """One round of the leader's duties; True if there was work (go again at once).

        Each duty fails on its own: a broker that cannot take messages must not
        stop the reconciler, which is what re-creates its topics.
        """
        if time.monotonic() - self._reconciled_at >= self.settings.reconcile_interval_seconds:
            self._reconciled_at = time.monotonic()
            await self._duty("reconcile", self.reconcile)
            await self._duty("templates", self.remove_finished_templates)
        if time.monotonic() - self._maintained_at >= self.settings.retention_interval_seconds:
            self._maintained_at = time.monotonic()
            await self._duty("retention", self.maintain_partitions)
        published = await self._duty("outbox", self.publish_stale)
        metrics.OUTBOX_PUBLISHED.inc(published)
        await self._duty("backlog", self.measure_backlog)
        if published:
            log.info("relay: published %d outbox rows", published)
        return bool(published)

    async def _duty(self, name: str, duty: Callable[[], Awaitable[int]]) -> int:
        try:
            return await duty()
        except Exception as exc:
            log.warning("relay %s: %s", name, exc)
            return 0

    async def publish_stale(self) -> int:
        return await outbox.publish_stale(self.sessions, self.producer, STALE_AFTER_SECONDS)

    async def remove_finished_templates(self) -> int:
        """Delete the provider templates of campaigns sent or cancelled at least
        ``RESEND_TEMPLATE_GRACE_SECONDS`` ago; how many were deleted.

        The campaign forgets its template when it finishes (the next round, if
        any, makes its own); the template itself stays for the grace period,
        since emails the provider accepted may still be queued there. Deletes
        are paced like sends; one that fails is tried again next time.
        """
        if self.templates is None:
            return 0
        async with self.sessions.begin() as session:
            forgotten = await template_repository.finish_templates(session)
        if not isinstance(self.templates, StoredTemplateProvider):
            # Kept in the provider's memory: nothing is queued against them there.
            for _, kept in forgotten:
                await self.templates.remove_template(kept)
            return len(forgotten)
        async with self.sessions() as session:
            due = await template_repository.due_for_delete(
                session, self.settings.resend_template_grace_seconds
            )
        deleted: list[int] = []
        for row, campaign_id, template_id in due:
            if template_id is None:
                # Created without an answer (a crash or a timeout): nothing to delete by id.
                log.warning("campaign %s: a template may be left at the provider", campaign_id)
                deleted.append(row)
                continue
            await self.pacer.acquire()
            try:
                await self.templates.remove_template(template_id)
            except RateLimited as exc:
                self.pacer.throttled(exc.retry_after)
                break
            except ProviderError as exc:
                log.warning(
                    "campaign %s: template %s not deleted yet: %s", campaign_id, template_id, exc
                )
                continue
            self.pacer.succeeded()
            deleted.append(row)
        async with self.sessions.begin() as session:
            await template_repository.forget(session, deleted)
        return len(deleted)

    async def maintain_partitions(self) -> int:
        """Create partitions ahead, drop those past retention; returns how many were dropped."""
        async with self.sessions.begin() as session:
            done = await retention.maintain(session, self.settings)
        if done.created or done.dropped or done.moved or done.kept_pending:
            log.info(
                "retention: created %s, dropped %s, moved %d rows out of default partitions, "
                "kept %s (pending rows)",
                done.created,
                done.dropped,
                done.moved,
                done.kept_pending,
            )
        pruned = (done.messages_pruned, done.firings_pruned, done.idempotency_keys_pruned)
        if any(pruned):
            log.info(
                "retention: deleted %d messages, %d trigger firings, %d idempotency keys", *pruned
            )
        return len(done.dropped)

    async def measure_backlog(self) -> int:
        """Outbox rows waiting to be published (the ``campaign_outbox_backlog`` gauge)."""
        async with self.sessions() as session:
            backlog = int(await session.scalar(text("SELECT count(*) FROM outbox")) or 0)
        metrics.OUTBOX_BACKLOG.set(backlog)
        return 0

    async def reconcile(self) -> int:
        """Re-create lost topics; re-drive every campaign that stopped moving."""
        await asyncio.to_thread(create_topics, self.settings)
        async with (
            outbox.unit_of_work(self.sessions, self.producer) as work,
            work.transaction() as session,
        ):
            campaigns = await reconciler_repository.stalled(
                session, self.settings.reconcile_stall_seconds
            )
            for campaign in campaigns:
                log.warning("reconciler: re-driving %s campaign %s", campaign.status, campaign.id)
                metrics.RECONCILER_ACTIONS.labels(campaign.status).inc()
                if campaign.status == CampaignStatus.QUEUED:
                    await logic.enqueue_planning(session, campaign, Action.REDRIVE)
                    continue
                lifecycle.apply(campaign, Action.REDRIVE)
                await repository.open_window(session, campaign, self.settings.send_window_batches)
                await session.flush()
                await repository.finish_if_done(session, campaign.id)
        return len(campaigns)
