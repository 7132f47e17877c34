"""Messages sent later: a ``send_at`` makes a message ``scheduled`` with a durable timer.

The timer (kind ``message.send``, key ``message:<id>``) is fired once by the
``timers`` role (``service.timers.logic``), which queues the message as ``POST
…/messages`` would (``queued`` and a ``messages.v1`` outbox row) in the
transaction that deletes the timer. Cancelling deletes the timer first and
then moves the message, the order the timers loop takes them in, so the two
never wait on each other; whichever commits first wins and the other finds
the message no longer ``scheduled``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_MESSAGES
from schemas.messages import MessageRequested
from service import outbox
from service.errors import Conflict, Unprocessable
from service.messages import repository
from service.models import Message
from service.timers import repository as timers
from service.timers.logic import BatchHandler
from service.timers.repository import DueTimer

SEND_KIND = "message.send"
# How far ahead a message may be scheduled.
HORIZON = timedelta(days=30)


def timer_key(message_id: uuid.UUID) -> str:
    return f"message:{message_id}"


def due_time(send_at: datetime | None, now: datetime, field: str) -> datetime | None:
    """When a message with ``send_at`` is due, or None to send it now.

    A time already past sends now: a clock a little behind ours, or a request
    that waited in a queue, still sends its message rather than failing.
    """
    if send_at is None or send_at <= now:
        return None
    if send_at > now + HORIZON:
        raise Unprocessable(
            "invalid_send_at", f"send_at is more than {HORIZON.days} days ahead", field
        )
    return send_at


async def queue_now(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """One ``messages.v1`` outbox row for each ``queued`` message of ``rows``."""
    await outbox.add(
        session,
        (
            (
                TOPIC_MESSAGES,
                str(row["id"]),
                MessageRequested(message_id=row["id"], sponsor_id=row["sponsor_id"]).to_bytes(),
            )
            for row in rows
            if row["status"] == "queued"
        ),
    )


async def schedule(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """A timer for each ``scheduled`` message of ``rows``, in one statement."""
    await timers.schedule_many(
        session,
        SEND_KIND,
        [
            (timer_key(row["id"]), row["send_at"], {"message_id": str(row["id"])})
            for row in rows
            if row["status"] == "scheduled"
        ],
    )


async def fire(session: AsyncSession, due: Sequence[DueTimer]) -> None:
    """The due messages queued, those still scheduled (not cancelled, not gone), in
    one statement and one outbox write however many fell due together."""
    moved = await repository.queue_due(
        session, [uuid.UUID(timer.payload["message_id"]) for timer in due]
    )
    await queue_now(
        session,
        [
            {"id": message_id, "sponsor_id": sponsor_id, "status": "queued"}
            for message_id, sponsor_id in moved
        ],
    )


FIRE = BatchHandler(fire)


async def cancel(session: AsyncSession, sponsor_id: str, message_id: uuid.UUID) -> Message:
    """Cancel a scheduled message; 404 if unknown, 409 if no longer scheduled."""
    row = await repository.get_message(session, sponsor_id, message_id)
    await timers.cancel(session, [timer_key(message_id)])
    if await repository.move_scheduled(session, message_id, "cancelled") is None:
        await session.refresh(row)
        raise Conflict(
            "invalid_transition",
            f"cannot cancel a message that is {row.status} (only a scheduled one)",
            "status",
        )
    await session.refresh(row)
    return row
