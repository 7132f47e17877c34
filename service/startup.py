"""Startup waits: the API and the workers wait for PostgreSQL and Kafka instead of crashing.

In a fresh deployment the database and the broker often come up after the
service's pods; retrying with backoff for ``STARTUP_WAIT_SECONDS`` turns that
race into a short wait. Past the deadline the process exits with a message
naming what is still missing (and the orchestrator restarts it).
"""

from __future__ import annotations

import asyncio
import logging
import random

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service import kafka
from service.settings import Settings

log = logging.getLogger(__name__)


async def missing_dependencies(settings: Settings, engine: AsyncEngine) -> dict[str, str]:
    """``{"database": reason, "kafka": reason}`` for each dependency that does not answer."""
    missing: dict[str, str] = {}
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        missing["database"] = type(exc).__name__
    try:
        await asyncio.to_thread(kafka.ping, settings)
    except Exception as exc:
        missing["kafka"] = type(exc).__name__
    return missing


async def wait_for_dependencies(settings: Settings, engine: AsyncEngine) -> None:
    """Return once PostgreSQL and Kafka answer; raise ``RuntimeError`` after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.startup_wait_seconds
    delay = 0.5
    while missing := await missing_dependencies(settings, engine):
        left = deadline - loop.time()
        described = ", ".join(f"{name} ({reason})" for name, reason in missing.items())
        if left <= 0:
            raise RuntimeError(f"gave up waiting for {described}")
        log.warning("waiting for %s; retrying in %.1fs", described, min(delay, left))
        await asyncio.sleep(min(delay * (0.5 + random.random()), left))
        delay = min(delay * 2, 10.0)
