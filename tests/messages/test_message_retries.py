"""A message the provider cannot take now waits, queued, on a durable timer.

The message-sender's delivery is driven directly against the real database and
the fake Resend; the ``message.retry`` timer is fired as the ``timers`` role
fires it. Messages are written without their outbox rows, so the suite's
running workers never send them behind the test's back.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.messages import MessageIn, MessageRequested
from service.messages import logic, retries
from service.settings import Settings
from service.timers.logic import fire_due
from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from tests.messages.test_messages import Api, alert
from worker.delivery.messages import MessageDeliveries
from worker.providers import build_provider
from worker.ratelimit import Pacer


@pytest.fixture
async def deliveries(
    migrated: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[MessageDeliveries]:
    settings = migrated.model_copy(update={"send_max_tries": 1, "message_retry_attempts": 2})
    provider = build_provider(settings)
    yield MessageDeliveries(sessions, provider, Pacer(1000), settings)
    await provider.aclose()


@pytest.fixture
async def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    api = Api(client, sponsor, token)
    await api.add_type()
    return api


async def _queued(
    api: Api, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> MessageRequested:
    """A queued message, as the API writes it but with no event published for it."""
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    async with sessions.begin() as session:
        [message_id] = await logic.queue(
            session, settings, api.sponsor, [MessageIn.model_validate(alert(to))], None
        )
        await session.execute(text("DELETE FROM outbox WHERE key = :key"), {"key": str(message_id)})
    return MessageRequested(message_id=message_id, sponsor_id=api.sponsor)


async def _retry_timer(
    sessions: async_sessionmaker[AsyncSession], message_id: uuid.UUID
) -> dict[str, object] | None:
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT kind, due_at, payload FROM timers WHERE key = :key"),
                {"key": retries.retry_key(message_id)},
            )
        ).first()
    return None if row is None else {"kind": row.kind, "due_at": row.due_at, **row.payload}


async def _fire_retry(
    sessions: async_sessionmaker[AsyncSession], message_id: uuid.UUID
) -> MessageRequested:
    """Fire the message's timer as if it were due; the event it published."""
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE timers SET due_at = now() - interval '1 second' WHERE key = :key"),
            {"key": retries.retry_key(message_id)},
        )
        await fire_due(session, {retries.RETRY_KIND: retries.fire_retry})
        payload = await session.scalar(
            text("DELETE FROM outbox WHERE key = :key RETURNING payload"),
            {"key": str(message_id)},
        )
    assert payload is not None
    return MessageRequested.model_validate_json(payload)


async def test_a_message_the_provider_keeps_refusing_stays_queued_on_a_retry_timer(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    event = await _queued(api, sessions, deliveries.settings)
    fake.fail_next(1, status=503)
    before = datetime.now(UTC)
    await deliveries.send(event)
    status = await api.status(str(event.message_id))
    assert status["status"] == "queued"
    assert status["last_error"]
    timer = await _retry_timer(sessions, event.message_id)
    assert timer is not None and timer["kind"] == retries.RETRY_KIND and timer["attempt"] == 1
    base = deliveries.settings.message_retry_base_seconds
    assert timer["due_at"] >= before + timedelta(seconds=base)  # type: ignore[operator]


async def test_a_retry_timer_fired_sends_the_message_under_the_same_idempotency_key(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    event = await _queued(api, sessions, deliveries.settings)
    fake.fail_next(1, status=503)
    await deliveries.send(event)
    again = await _fire_retry(sessions, event.message_id)
    assert again.attempt == 1
    await deliveries.send(again)
    assert (await api.status(str(event.message_id)))["status"] == "sent"
    keys = [r.idempotency_key for r in fake.requests if r.path.startswith("/emails")]
    async with sessions() as session:
        claimed = await session.scalar(
            text("SELECT send_batch FROM messages WHERE id = :id"), {"id": event.message_id}
        )
    # Its batch's key: the batch it was claimed into goes again, whole.
    assert claimed is not None
    assert keys == [claimed] * 2
    assert await _retry_timer(sessions, event.message_id) is None


async def test_a_message_past_its_retry_attempts_fails_with_the_reason(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    event = await _queued(api, sessions, deliveries.settings)
    spent = event.model_copy(update={"attempt": deliveries.settings.message_retry_attempts})
    fake.fail_next(1, status=503)
    await deliveries.send(spent)
    status = await api.status(str(event.message_id))
    assert status["status"] == "failed"
    assert status["last_error"].startswith("service_unavailable")
    assert await _retry_timer(sessions, event.message_id) is None


async def test_an_exhausted_quota_stops_sending_and_keeps_every_message_queued(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    first, second = [await _queued(api, sessions, deliveries.settings) for _ in range(2)]
    fake.fail_next(1, status=429, error_name="daily_quota_exceeded")
    await deliveries.send(first)
    await deliveries.send(second)
    assert len([r for r in fake.requests if r.path.startswith("/emails")]) == 1
    for event in (first, second):
        status = await api.status(str(event.message_id))
        assert status["status"] == "queued"
        assert status["last_error"].startswith("daily_quota_exceeded")
        timer = await _retry_timer(sessions, event.message_id)
        assert timer is not None and timer["attempt"] == 0
    assert _quota_alert() == 1.0


async def test_a_message_sent_once_the_quota_is_back_clears_the_alert(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    event = await _queued(api, sessions, deliveries.settings)
    fake.fail_next(1, status=429, error_name="daily_quota_exceeded")
    await deliveries.send(event)
    deliveries.sends._quota_until = 1.0  # the quota window has passed
    await deliveries.send(await _fire_retry(sessions, event.message_id))
    assert (await api.status(str(event.message_id)))["status"] == "sent"
    assert _quota_alert() == 0.0


def _quota_alert() -> float | None:
    return REGISTRY.get_sample_value("campaign_provider_quota_exhausted", {"provider": "resend"})
