"""``campaignctl worker``: runs every consumer role in one process, or just one.

Each role is its own consumer group, so roles scale independently when run
as separate processes (``--role``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from aiolimiter import AsyncLimiter

from schemas.events import TOPIC_CAMPAIGN_BATCHES, TOPIC_CAMPAIGNS
from service.db import create_engine, session_factory
from service.kafka import Producer
from service.settings import Settings
from worker.planner import Planner
from worker.providers import build_provider
from worker.relay import run_relay
from worker.runner import run_consumer
from worker.sender import Sender

log = logging.getLogger(__name__)

ROLES = ("planner", "sender", "relay")


async def run_worker(settings: Settings, roles: Sequence[str], stop: asyncio.Event) -> None:
    """Run the given roles until ``stop`` is set, then close everything cleanly."""
    engine = create_engine(settings)
    sessions = session_factory(engine)
    producer = Producer(settings)
    provider = build_provider(settings)
    tasks = []
    if "planner" in roles:
        planner = Planner(sessions, producer, settings.provider_batch_size)
        tasks.append(
            run_consumer(
                settings,
                group="planner",
                topics=[TOPIC_CAMPAIGNS],
                handle=planner.handle,
                stop=stop,
                max_messages=10,
            )
        )
    if "sender" in roles:
        limiter = AsyncLimiter(settings.provider_rate_per_second, 1.0)
        sender = Sender(sessions, provider, limiter)
        tasks.append(
            run_consumer(
                settings,
                group="sender",
                topics=[TOPIC_CAMPAIGN_BATCHES],
                handle=sender.handle,
                stop=stop,
                max_messages=32,
            )
        )
    if "relay" in roles:
        tasks.append(run_relay(sessions, producer, stop, settings.relay_interval_seconds))
    try:
        await asyncio.gather(*tasks)
    finally:
        await provider.aclose()
        await asyncio.to_thread(producer.close)
        await engine.dispose()


def main(settings: Settings, roles: Sequence[str]) -> None:
    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker starting: %s", ", ".join(roles))
        await run_worker(settings, roles, stop)

    asyncio.run(_run())
