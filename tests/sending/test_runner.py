"""How the consume loops take messages from the consumer's fetch queue, which
offsets the concurrent loop stores, which failures are retried and which
messages go to the dead-letter topic.

The loop itself (offsets stored after the work, retries, drain) runs on the real
broker in ``tests/sending/test_recovery.py`` and ``tests/sending/test_replay.py``;
here each consumer meets a poison message on the real broker and carries on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, cast

import asyncpg
import confluent_kafka
import httpx
import pytest
import sqlalchemy.exc

from schemas.events import TOPIC_CAMPAIGN_BATCHES, TOPIC_CAMPAIGNS
from service.errors import (
    KafkaUnavailable,
    NotFound,
    PermanentProviderError,
    TransientProviderError,
)
from service.settings import Settings
from tests import factories
from tests.conftest import TokenFactory, eventually
from tests.dead_letters import dead_letter, produce
from worker.dead_letters import DeadLetters, is_transient, reason_of
from worker.roles import Role
from worker.runner import _bisect, _InOrderOffsets, _poll


class FetchQueue:
    """Stands in for a consumer with ``ready`` messages fetched; records each ``consume``."""

    def __init__(self, ready: int) -> None:
        self.ready = [f"message {n}" for n in range(ready)]
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.calls.append((num_messages, timeout))
        taken, self.ready = self.ready[:num_messages], self.ready[num_messages:]
        return taken


def test_a_filling_poll_asks_for_a_whole_batch() -> None:
    queue = FetchQueue(ready=3)

    assert len(_poll(queue, 16, 0.5, fill=True)) == 3  # type: ignore[arg-type]
    assert queue.calls == [(16, 0.5)]


def test_a_prompt_poll_waits_for_one_message_then_takes_what_has_arrived() -> None:
    queue = FetchQueue(ready=3)

    assert len(_poll(queue, 16, 0.5, fill=False)) == 3  # type: ignore[arg-type]
    assert queue.calls == [(1, 0.5), (15, 0)]


def test_a_prompt_poll_that_gets_nothing_asks_no_more() -> None:
    queue = FetchQueue(ready=0)

    assert _poll(queue, 16, 0.5, fill=False) == []  # type: ignore[arg-type]
    assert queue.calls == [(1, 0.5)]


class Message:
    """Stands in for a consumed message: where it was in its partition."""

    def __init__(self, partition: int, offset: int) -> None:
        self._where = ("campaign-batches.v1", partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


def message(partition: int, offset: int) -> confluent_kafka.Message:
    return cast(confluent_kafka.Message, Message(partition, offset))


def stored(offsets: _InOrderOffsets) -> list[tuple[int, int]]:
    return [(tp.partition, tp.offset) for tp in offsets.take()]


def test_a_partition_offset_moves_only_past_messages_that_are_all_done() -> None:
    offsets = _InOrderOffsets()
    first, second, third, elsewhere = message(0, 10), message(0, 11), message(0, 12), message(1, 5)
    for each in (first, second, third, elsewhere):
        offsets.add(each)

    offsets.done(third)
    offsets.done(elsewhere)
    assert stored(offsets) == [(1, 6)]  # partition 0 waits for offset 10

    offsets.done(first)
    assert stored(offsets) == [(0, 11)]  # 11 is still running
    offsets.done(second)
    assert stored(offsets) == [(0, 13)]
    assert stored(offsets) == []  # nothing new


def test_a_message_that_comes_again_never_moves_the_offset_back() -> None:
    offsets = _InOrderOffsets()
    for n in (10, 11):
        offsets.add(message(0, n))
        offsets.done(message(0, n))
    assert stored(offsets) == [(0, 12)]

    # The partition went away before the commit and came back from offset 10.
    offsets.add(message(0, 10))
    offsets.add(message(0, 11))
    offsets.add(message(0, 12))
    offsets.done(message(0, 10))
    assert stored(offsets) == []
    offsets.done(message(0, 12))
    offsets.done(message(0, 11))
    assert stored(offsets) == [(0, 13)]


class Letters:
    """Stands in for the dead-letter producer: records what would be dead-lettered."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    async def send(self, message: Any, group: str, reason: str, error: BaseException) -> None:
        self.sent.append((message.offset(), reason))


async def test_a_batch_that_fails_for_good_dead_letters_only_its_poison_events() -> None:
    handled: list[str] = []

    async def handle(events: Sequence[str]) -> None:
        if "poison" in events:
            raise OverflowError("value out of int64 range")  # the whole batch rolls back
        handled.extend(events)

    letters = Letters()
    batch = [(message(0, n), "poison" if n in (3, 6) else f"event {n}") for n in range(8)]
    await _bisect(Role("test", {}, handle), batch, asyncio.Event(), cast(DeadLetters, letters))

    assert letters.sent == [(3, "invalid_value"), (6, "invalid_value")]
    assert handled == [f"event {n}" for n in (0, 1, 2, 4, 5, 7)]


async def test_a_transient_failure_is_retried_not_dead_lettered() -> None:
    calls: list[list[str]] = []

    async def handle(events: Sequence[str]) -> None:
        calls.append(list(events))
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "the database is restarting")

    letters = Letters()
    batch = [(message(0, 1), "event 1"), (message(0, 2), "event 2")]
    await _bisect(Role("test", {}, handle), batch, asyncio.Event(), cast(DeadLetters, letters))

    assert calls == [["event 1", "event 2"]] * 3
    assert letters.sent == []


def _wrapped(error: Exception) -> sqlalchemy.exc.DBAPIError:
    """``error`` as SQLAlchemy raises it from asyncpg: wrapped, with the original as cause."""
    try:
        raise sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception(str(error))) from error
    except sqlalchemy.exc.DBAPIError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "error",
    [
        TransientProviderError("timeout", "the provider timed out"),
        KafkaUnavailable("no ack"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        _wrapped(asyncpg.ConnectionDoesNotExistError("connection was closed")),
        _wrapped(asyncpg.SerializationError("could not serialize access")),
        _wrapped(asyncpg.CannotConnectNowError("the database system is starting up")),
        _wrapped(asyncpg.QueryCanceledError("statement timeout")),
    ],
    ids=type,
)
def test_outages_and_timeouts_are_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (_wrapped(asyncpg.DataError("value out of int64 range")), "invalid_value"),
        (_wrapped(asyncpg.DatetimeFieldOverflowError("date out of range")), "invalid_value"),
        (OverflowError("date value out of range"), "invalid_value"),
        (_wrapped(asyncpg.UniqueViolationError("duplicate key")), "constraint"),
        (sqlalchemy.exc.NoResultFound("no row"), "missing_row"),
        (NotFound("campaign_not_found", "no such campaign"), "domain_error"),
        (PermanentProviderError("validation_error", "bad address"), "domain_error"),
        (KeyError("field"), "unexpected"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_a_contract_violation_is_permanent_and_named(error: Exception, reason: str) -> None:
    assert not is_transient(error)
    assert reason_of(error) == reason


async def _sent(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, leads: int = 3
) -> None:
    """A campaign goes all the way through planner and sender."""
    headers = token(sponsor)
    base = f"/api/v1/sponsors/{sponsor}/campaigns"
    rows = factories.leads(leads, domain=f"{sponsor}.example")
    await factories.add_leads(client, sponsor, headers, rows)
    created = (await client.post(base, headers=headers, json=factories.campaign())).json()

    async def sent() -> bool:
        stats = (await client.get(f"{base}/{created['id']}/stats", headers=headers)).json()
        return bool(stats["status"] == "sent" and stats["sent"] == leads)

    assert await eventually(sent, within=90)


@pytest.mark.usefixtures("workers")
@pytest.mark.parametrize(
    ("topic", "group"), [(TOPIC_CAMPAIGNS, "planner"), (TOPIC_CAMPAIGN_BATCHES, "sender")]
)
async def test_an_undecodable_message_is_dead_lettered_and_the_consumer_handles_the_next(
    topic: str,
    group: str,
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    migrated: Settings,
) -> None:
    key = f"poison-{uuid.uuid4().hex}"
    await produce(migrated, topic, key, b'{"type": "campaign.')
    await _sent(client, sponsor, token)

    value, headers = await dead_letter(migrated, key)
    assert value == b'{"type": "campaign.'
    assert headers["dead-letter.reason"] == "undecodable"
    assert headers["dead-letter.group"] == group
    assert headers["dead-letter.topic"] == migrated.topic(topic)
    assert int(headers["dead-letter.offset"]) >= 0 and "dead-letter.partition" in headers
