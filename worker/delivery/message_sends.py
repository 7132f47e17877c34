"""The provider requests of a polled batch of messages: batched where it can be, exactly once.

A provider with a batch endpoint that carries a body per email and honours an
idempotency key per request (``EmailProvider.batches_messages``: Resend's
``/emails/batch``) sends the messages of a poll up to ``PROVIDER_BATCH_SIZE``
a request. Exactly once holds because a batch is decided before it is sent:
its members are claimed under a fresh key (``messages.send_batch``), and that
commit comes before the request, whose idempotency key is the batch key. A
claimed message still ``queued`` later (a crash before its outcome was
recorded, a retry on a timer, a second copy of its event) is sent again with
exactly the members of its batch, in the same order, under the same key: the
provider answers the first request's answer and sends nothing twice. A batch
is never formed again from claimed messages.

A message with attachments (the batch endpoint takes none) and every message
on a provider without such an endpoint goes alone, its id the key, as does
each member of a batch the provider refuses whole for one member's sake
(Resend's ``strict`` validation: 400/422 and nothing sent). In ``permissive``
validation Resend sends the valid members and names the others, which fail
alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.messages import MessageRequested
from service import db, metrics
from service.errors import (
    PermanentProviderError,
    ProviderError,
    QuotaExceeded,
    TransientProviderError,
)
from service.messages import retries, sending_repository
from service.settings import Settings
from worker.delivery import core
from worker.providers.base import OutgoingEmail

log = logging.getLogger(__name__)

# Provider requests one message-sender has open at once (each still paced).
SENDS_AT_ONCE = 32


@dataclass(slots=True)
class Ready:
    """A message rendered and due to go out through ``delivery`` (its sponsor's
    account); ``send_batch`` is the batch it was claimed into, if any."""

    event: MessageRequested
    email: OutgoingEmail
    links: Sequence[str]
    send_batch: str | None
    delivery: core.DeliveryCore


@dataclass(frozen=True, slots=True)
class Wait:
    """A message left ``queued`` for a timer: retries spent when it fires, when, why."""

    event: MessageRequested
    attempt: int
    due_at: datetime
    reason: str


Answer = sending_repository.Outcome | Wait


@dataclass(slots=True)
class Plan:
    """The requests of a poll: batches by key (claimed now or before) and singles;
    ``elsewhere`` were claimed by another copy meanwhile (handled again)."""

    batches: dict[str, list[Ready]]
    singles: list[Ready]
    elsewhere: list[MessageRequested]


def new_batch_key() -> str:
    return f"msgbatch-{uuid.uuid4().hex}"


async def plan(
    sessions: async_sessionmaker[AsyncSession], ready: Sequence[Ready], batch_size: int
) -> Plan:
    """Group ``ready`` into requests, the new batches claimed (committed) first; a
    batch holds messages of one provider account."""
    result = Plan({}, [], [])
    fresh: dict[int, list[Ready]] = {}
    for item in sorted(ready, key=lambda r: r.event.message_id):
        if item.email.attachments or not getattr(item.delivery.provider, "batches_messages", False):
            result.singles.append(item)
        elif item.send_batch is not None:
            result.batches.setdefault(item.send_batch, []).append(item)
        else:
            fresh.setdefault(id(item.delivery), []).append(item)
    if not fresh:
        return result
    keys: dict[uuid.UUID, str] = {}
    for account in fresh.values():
        for start in range(0, len(account), batch_size):
            key = new_batch_key()
            for item in account[start : start + batch_size]:
                keys[item.event.message_id] = key
    async with db.driver(sessions) as driver:
        claimed = await sending_repository.claim_send_batches(driver, keys)
    for item in (item for account in fresh.values() for item in account):
        if item.event.message_id in claimed:
            item.send_batch = keys[item.event.message_id]
            result.batches.setdefault(item.send_batch, []).append(item)
        else:
            result.elsewhere.append(item.event)
    return result


class MessageSends:
    """Sends batches and single messages through the core, with the quota and retry
    rules of messages (``service.messages.retries``)."""

    def __init__(self, delivery: core.DeliveryCore, settings: Settings) -> None:
        self.core = delivery
        self.settings = settings
        self._sending = asyncio.Semaphore(SENDS_AT_ONCE)
        # Until this monotonic time the provider's quota is spent (0: it is not).
        self._quota_until = 0.0
        self._quota_reason = ""

    async def send_plan(self, planned: Plan) -> list[Answer]:
        requests = [self.send_batch(key, members) for key, members in planned.batches.items()]
        requests += [self.send_single(item) for item in planned.singles]
        answers: list[Answer] = []
        for part in await asyncio.gather(*requests):
            answers.extend(part)
        return answers

    async def send_batch(self, key: str, members: Sequence[Ready]) -> list[Answer]:
        """One request under ``key``; refused whole for a member, each goes alone."""
        if time.monotonic() < self._quota_until:
            return [self._wait_for_quota(m.event) for m in members]
        emails = [m.email for m in members]
        try:
            async with self._sending:
                results = await members[0].delivery.send(emails, key)
        except QuotaExceeded as exc:
            return [self._quota_exhausted(m.event, exc) for m in members]
        except TransientProviderError as exc:
            # Retried with the same key until SEND_MAX_TRIES; next, the whole batch on
            # timers (its first member's timer to fire sends it, members as claimed).
            attempt = max(m.event.attempt for m in members)
            waits = [self._retry_later(m.event, attempt, exc) for m in members]
            if all(w is not None for w in waits):
                return [w for w in waits if w is not None]
            return _failed(members, exc)
        except PermanentProviderError as exc:
            if type(exc) is PermanentProviderError and exc.status in (400, 422):
                # Nothing of it went out: each member alone tells which one it was.
                singles = await asyncio.gather(*(self.send_single(m) for m in members))
                return [answer for part in singles for answer in part]
            return _failed(members, exc)
        except ProviderError as exc:
            return _failed(members, exc)
        self._quota_cleared()
        return [
            _outcome(m, r.provider_message_id, r.error)
            for m, r in zip(members, results, strict=True)
        ]

    async def send_single(self, item: Ready) -> list[Answer]:
        """The message alone, its id the key."""
        event = item.event
        if time.monotonic() < self._quota_until:
            # The quota is spent: the provider would refuse it, so it is not asked.
            return [self._wait_for_quota(event)]
        try:
            async with self._sending:
                results = await item.delivery.send([item.email], str(event.message_id))
        except QuotaExceeded as exc:
            return [self._quota_exhausted(event, exc)]
        except TransientProviderError as exc:
            wait = self._retry_later(event, event.attempt, exc)
            return [wait] if wait is not None else _failed([item], exc)
        except ProviderError as exc:
            return _failed([item], exc)
        self._quota_cleared()
        result = results[0] if results else None
        if result is None:
            return [_outcome(item, None, "no answer")]
        return [_outcome(item, result.provider_message_id, result.error)]

    def _retry_later(
        self, event: MessageRequested, attempt: int, exc: ProviderError
    ) -> Wait | None:
        """The message's next attempt on a timer; None once its retries are used up."""
        if attempt >= self.settings.message_retry_attempts:
            return None
        delay = retries.backoff_seconds(self.settings.message_retry_base_seconds, attempt)
        reason = f"{exc.code}: {exc.message}"
        log.warning("message retry %d in %.0fs: %s", attempt + 1, delay, reason)
        due = datetime.now(UTC) + timedelta(seconds=delay)
        return Wait(event, attempt + 1, due, reason)

    def _quota_exhausted(self, event: MessageRequested, exc: QuotaExceeded) -> Wait:
        """Stop asking the provider until the quota window has passed; raise the alert."""
        seconds = self.settings.message_quota_retry_seconds
        if time.monotonic() >= self._quota_until:
            log.error(
                "provider quota exhausted (%s: %s): messages stay queued, tried again in %.0fs",
                exc.code,
                exc.message,
                seconds,
            )
        metrics.PROVIDER_QUOTA_EXHAUSTED.labels(self.core.provider.name).set(1)
        self._quota_until = time.monotonic() + seconds
        self._quota_reason = f"{exc.code}: {exc.message}"
        return self._wait_for_quota(event)

    def _wait_for_quota(self, event: MessageRequested) -> Wait:
        """Keep the message queued, on a timer due when the quota window ends; not an
        attempt spent: a quota says nothing of this message."""
        left = max(self._quota_until - time.monotonic(), 0.0)
        due = datetime.now(UTC) + timedelta(seconds=left)
        return Wait(event, event.attempt, due, self._quota_reason)

    def _quota_cleared(self) -> None:
        if self._quota_until:
            self._quota_until = 0.0
            metrics.PROVIDER_QUOTA_EXHAUSTED.labels(self.core.provider.name).set(0)
            log.info("provider quota available again: messages are sent")


def _outcome(item: Ready, provider_message_id: str | None, error: str | None) -> Answer:
    message_id = item.event.message_id
    if provider_message_id:
        return sending_repository.Outcome(message_id, "sent", provider_message_id, links=item.links)
    return sending_repository.Outcome(message_id, "failed", error=error or "no answer")


def _failed(items: Sequence[Ready], exc: ProviderError) -> list[Answer]:
    error = f"{exc.code}: {exc.message}"
    return [
        sending_repository.Outcome(item.event.message_id, "failed", error=error) for item in items
    ]
