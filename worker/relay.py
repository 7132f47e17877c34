"""The relay role: publishes outbox rows that the writers' fast path left behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import outbox
from service.kafka import Producer

log = logging.getLogger(__name__)

# Rows younger than this are probably being published by their writer right now.
STALE_AFTER_SECONDS = 2.0


async def run_relay(
    sessions: async_sessionmaker[AsyncSession],
    producer: Producer,
    stop: asyncio.Event,
    interval: float,
) -> None:
    while not stop.is_set():
        published = 0
        try:
            published = await outbox.publish_stale(sessions, producer, STALE_AFTER_SECONDS)
            if published:
                log.info("relay published %d outbox rows", published)
        except Exception as exc:
            log.warning("relay: %s", exc)
        if not published:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
