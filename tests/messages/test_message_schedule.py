"""Messages sent later (``send_at``): scheduled on a durable timer, queued at their
time by the ``timers`` role, and cancelled with ``DELETE`` while they wait."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.messages import scheduling
from service.timers import repository as timers
from service.timers.logic import fire_due
from tests.conftest import TokenFactory, eventually
from tests.fakes.resend_server import FakeResend
from tests.messages.test_messages import Api, alert

pytestmark = pytest.mark.usefixtures("workers")

HANDLERS = {scheduling.SEND_KIND: scheduling.FIRE}


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


def later(to: str, send_at: datetime) -> dict[str, Any]:
    return {**alert(to), "send_at": send_at.isoformat()}


def address() -> str:
    return f"{uuid.uuid4().hex[:8]}@customer.example"


async def fire(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    """One pass of the timers loop at ``now`` (its outbox rows go out through the relay)."""
    async with sessions.begin() as session:
        await fire_due(session, HANDLERS, now=now)


async def test_a_message_with_send_at_waits_scheduled_and_is_sent_at_its_time(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type()
    to = address()
    # Given in another offset: the instant is what counts.
    send_at = (datetime.now(UTC) + timedelta(seconds=2)).astimezone(ZoneInfo("Europe/Paris"))
    response = await api.send(later(to, send_at))
    assert response.status_code == 202, response.text
    (message_id,) = response.json()["ids"]

    waiting = await api.status(message_id)
    assert waiting["status"] == "scheduled"
    assert datetime.fromisoformat(waiting["send_at"]) == send_at
    assert fake.messages_to(to) == []

    async def sent() -> dict[str, Any] | None:
        status = await api.status(message_id)
        return status if status["status"] not in ("scheduled", "queued") else None

    status = await eventually(sent)
    assert status["status"] == "sent", status
    history = [(entry["type"], entry["at"]) for entry in status["history"]]
    assert [kind for kind, _ in history[:3]] == ["scheduled", "queued", "sent"]
    assert datetime.fromisoformat(history[1][1]) == send_at
    assert datetime.fromisoformat(status["sent_at"]) >= send_at
    (message,) = fake.messages_to(to)
    assert message.created_at >= send_at.timestamp()


async def test_a_due_timer_queues_its_message_once_and_not_before_its_time(
    api: Api, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.add_type()
    send_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    response = await api.send(later(address(), send_at))
    (message_id,) = response.json()["ids"]

    await fire(sessions, send_at - timedelta(seconds=1))
    assert (await api.status(message_id))["status"] == "scheduled"
    await fire(sessions, send_at)
    assert (await api.status(message_id))["status"] != "scheduled"
    async with sessions() as session:
        assert await timers.due_at(session, [scheduling.timer_key(uuid.UUID(message_id))]) == {}
    assert (await api.settled(message_id))["status"] == "sent"


async def test_delete_cancels_a_scheduled_message_and_nothing_is_sent(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.add_type()
    to = address()
    send_at = datetime.now(UTC) + timedelta(hours=1)
    (message_id,) = (await api.send(later(to, send_at))).json()["ids"]

    cancelled = await api.client.delete(api.url(f"/messages/{message_id}"), headers=api.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    async with sessions() as session:
        assert await timers.due_at(session, [scheduling.timer_key(uuid.UUID(message_id))]) == {}
    await fire(sessions, send_at + timedelta(seconds=1))
    status = await api.status(message_id)
    assert status["status"] == "cancelled"
    assert [entry["type"] for entry in status["history"]] == ["scheduled", "cancelled"]
    assert fake.messages_to(to) == []

    again = await api.client.delete(api.url(f"/messages/{message_id}"), headers=api.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"


async def test_delete_of_a_message_already_sent_is_a_409_and_of_an_unknown_one_a_404(
    api: Api,
) -> None:
    await api.add_type()
    (message_id,) = (await api.send(alert(address()))).json()["ids"]
    assert (await api.settled(message_id))["status"] == "sent"

    response = await api.client.delete(api.url(f"/messages/{message_id}"), headers=api.headers)
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_transition", "status")
    assert "sent" in error["message"]
    unknown = await api.client.delete(api.url(f"/messages/{uuid.uuid4()}"), headers=api.headers)
    assert unknown.status_code == 404


async def test_send_at_in_the_past_sends_now(api: Api) -> None:
    await api.add_type()
    past = datetime.now(UTC) - timedelta(minutes=5)
    (message_id,) = (await api.send(later(address(), past))).json()["ids"]
    assert (await api.settled(message_id))["status"] == "sent"


async def test_send_at_beyond_thirty_days_or_without_an_offset_is_a_422(api: Api) -> None:
    await api.add_type()
    far = datetime.now(UTC) + timedelta(days=31)
    body = {"messages": [alert(address()), later(address(), far)]}
    response = await api.send(body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_send_at", "messages.1.send_at")

    naive = {**alert(address()), "send_at": "2030-01-01T09:00:00"}
    assert (await api.send(naive)).status_code == 422


async def test_two_timer_passes_at_once_send_a_scheduled_message_once(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.add_type()
    to = address()
    send_at = datetime.now(UTC) + timedelta(hours=2)
    (message_id,) = (await api.send(later(to, send_at))).json()["ids"]

    await asyncio.gather(fire(sessions, send_at), fire(sessions, send_at))
    assert (await api.settled(message_id))["status"] == "sent"
    await fire(sessions, send_at + timedelta(minutes=1))
    await asyncio.sleep(1)  # time for a second copy to arrive, if one were queued
    assert len(fake.messages_to(to)) == 1


async def test_messages_due_together_are_queued_in_one_pass(
    api: Api, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.add_type()
    send_at = datetime.now(UTC) + timedelta(hours=3)
    body = {"messages": [later(address(), send_at), later(address(), send_at)]}
    ids = (await api.send(body)).json()["ids"]

    await fire(sessions, send_at)
    for message_id in ids:
        assert (await api.settled(message_id))["status"] == "sent"
