"""The timers role: fires due timers, each once.

``TimerLoop`` polls every ``TIMERS_POLL_SECONDS``; a pass claims due rows with
``FOR UPDATE SKIP LOCKED`` (replicas share the work, none waits on another) and
fires them in the transaction that deletes them (``service.timers.logic``), then
publishes the outbox rows they wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import outbox
from service.appointments import followups
from service.appointments.outgoing import Config
from service.campaigns import ab, ab_repository, scheduler
from service.campaigns import logic as campaigns
from service.digests import logic as digests
from service.kafka import Producer
from service.messages import retries as message_retries
from service.messages import scheduling
from service.settings import Settings
from service.timers.logic import BatchHandler, Handler, fire_due

log = logging.getLogger(__name__)

BATCH = 100


def handlers(settings: Settings) -> Mapping[str, Handler | BatchHandler]:
    """The handler of every kind of timer this release fires."""
    return {
        **followups.timer_handlers(Config.from_settings(settings)),
        scheduler.START_KIND: BatchHandler(campaigns.start_due),
        digests.KIND: digests.fire,
        message_retries.RETRY_KIND: message_retries.fire_retry,
        ab_repository.DECIDE_KIND: ab.fire_decide,
        scheduling.SEND_KIND: scheduling.FIRE,
    }


class TimerLoop:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        settings: Settings,
    ) -> None:
        self.sessions = sessions
        self.producer = producer
        self.poll_seconds = settings.timers_poll_seconds
        self.handlers = handlers(settings)

    async def fire(self) -> int:
        """One pass: fire up to a batch of due timers; how many there were."""
        async with (
            outbox.unit_of_work(self.sessions, self.producer) as work,
            work.transaction() as session,
        ):
            return await fire_due(session, self.handlers, limit=BATCH)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fired = 0
            try:
                fired = await self.fire()
            except Exception:
                # The claimed rows rolled back with the failure: the next pass retries them.
                log.exception("timers: a pass failed")
            if fired < BATCH:  # a full batch: more may be due, go on at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
