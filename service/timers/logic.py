"""Firing due timers: each one's effect and its deletion commit together, so it fires once.

A kind of timer has one handler, ``(session, timer) -> None``, which writes its
effect (a message row and its outbox row, say) in the session it is given and
never commits. ``fire_due`` claims a batch of due rows with ``FOR UPDATE SKIP
LOCKED`` (two loops never take the same row), only of the kinds it has handlers
for (a worker of an older release leaves a newer kind alone), and runs their handlers in the same
transaction; a crash before the commit leaves the rows to fire on the next pass,
a crash after it leaves nothing to fire again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service import metrics
from service.timers import repository
from service.timers.repository import DueTimer

Handler = Callable[[AsyncSession, DueTimer], Awaitable[None]]


async def fire_due(
    session: AsyncSession,
    handlers: Mapping[str, Handler],
    *,
    limit: int = 100,
    now: datetime | None = None,
) -> int:
    """Fire up to ``limit`` due timers in the caller's transaction; how many were due."""
    moment = now or datetime.now(UTC)
    timers = await repository.claim_due(session, sorted(handlers), moment, limit)
    for timer in timers:
        metrics.TIMER_LATENESS.labels(timer.kind).observe(
            max(0.0, (moment - timer.due_at).total_seconds())
        )
        await handlers[timer.kind](session, timer)
    return len(timers)
