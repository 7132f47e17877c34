"""Firing due timers: each one's effect and its deletion commit together, so it fires once.

A kind of timer has one handler, which writes its effect (a message row and its
outbox row, say) in the session it is given and never commits: either a
``Handler``, ``(session, timer) -> None``, called once per timer, or a
``BatchHandler``, called once with all the claimed timers of its kind, for kinds
that fire many at a time (its work per batch stays the same however many are
due). ``fire_due`` claims a batch of due rows with ``FOR UPDATE SKIP LOCKED``
(two loops never take the same row), only of the kinds it has handlers for (a
worker of an older release leaves a newer kind alone), and runs their handlers
in the same transaction; a crash before the commit leaves the rows to fire on
the next pass, a crash after it leaves nothing to fire again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service import metrics
from service.timers import repository
from service.timers.repository import DueTimer

Handler = Callable[[AsyncSession, DueTimer], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BatchHandler:
    """Fires every claimed timer of its kind in one call, earliest first."""

    fire: Callable[[AsyncSession, Sequence[DueTimer]], Awaitable[None]]


async def fire_due(
    session: AsyncSession,
    handlers: Mapping[str, Handler | BatchHandler],
    *,
    limit: int = 100,
    now: datetime | None = None,
) -> int:
    """Fire up to ``limit`` due timers in the caller's transaction; how many were due."""
    moment = now or datetime.now(UTC)
    timers = await repository.claim_due(session, sorted(handlers), moment, limit)
    batches: dict[str, list[DueTimer]] = {}
    for timer in timers:
        metrics.TIMER_LATENESS.labels(timer.kind).observe(
            max(0.0, (moment - timer.due_at).total_seconds())
        )
        handler = handlers[timer.kind]
        if isinstance(handler, BatchHandler):
            batches.setdefault(timer.kind, []).append(timer)
        else:
            await handler(session, timer)
    for kind, batch in batches.items():
        handler = handlers[kind]
        assert isinstance(handler, BatchHandler)
        await handler.fire(session, batch)
    return len(timers)
