"""Messages tried again later: a durable ``message.retry`` timer per waiting message.

The message-sender retries a transient provider error in place
(``SEND_MAX_TRIES``); past that, and whenever the provider's quota is
exhausted, the message stays ``queued`` and a timer keyed by its id is set.
The ``timers`` role fires it by publishing the message again on
``messages.v1`` with the attempt counted, and the same idempotency key (the
message id) goes to the provider. Setting the timer twice moves it: one
waiting retry per message.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_MESSAGES
from schemas.messages import MessageRequested
from service import outbox
from service.timers import repository as timers
from service.timers.repository import DueTimer

RETRY_KIND = "message.retry"
# The longest a message waits between two attempts (a quota waits its own window).
MAX_BACKOFF_SECONDS = 3600.0


def backoff_seconds(base: float, attempt: int) -> float:
    """The wait before retry ``attempt + 1``: doubling from ``base``, at most an hour."""
    return float(min(base * 2.0**attempt, MAX_BACKOFF_SECONDS))


def retry_key(message_id: uuid.UUID) -> str:
    return f"{RETRY_KIND}:{message_id}"


async def retry_later(
    session: AsyncSession, event: MessageRequested, attempt: int, due_at: datetime
) -> None:
    """Set the message's retry timer: ``attempt`` retries spent once it fires."""
    payload = {
        "message_id": str(event.message_id),
        "sponsor_id": event.sponsor_id,
        "attempt": attempt,
    }
    await timers.schedule(session, RETRY_KIND, retry_key(event.message_id), due_at, payload)


async def fire_retry(session: AsyncSession, timer: DueTimer) -> None:
    """Publish the message again (through the outbox, in the timer's transaction)."""
    event = MessageRequested(
        message_id=uuid.UUID(timer.payload["message_id"]),
        sponsor_id=timer.payload["sponsor_id"],
        attempt=int(timer.payload["attempt"]),
    )
    await outbox.add(session, [(TOPIC_MESSAGES, str(event.message_id), event.to_bytes())])
