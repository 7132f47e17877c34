"""The consume loops of every role: decode, handle, dead-letter; offsets stored last.

``run_consumer`` polls a batch, decodes each message into its topic's event
type (``worker/roles.py`` declares them), hands the events to the role's
handler, and stores the offsets only when the handler returned (its database
work committed). ``run_consumer_concurrently`` (the sender's) hands over one
message at a time, several at once, and stores a partition's offsets as far as
its messages are done.

A transient failure (``worker.dead_letters.is_transient``) retries the same
messages with backoff, so a database or provider outage delays work but never
skips it. A message that does not decode, or whose handling fails for good, is
dead-lettered with the reason and counts as done: one poison message never
stops a consumer, and none is dropped silently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import confluent_kafka

from service.kafka import make_consumer
from service.settings import Settings
from worker.dead_letters import UNDECODABLE, DeadLetters, is_transient, reason_of

if TYPE_CHECKING:
    from worker.roles import Decoder, Role

log = logging.getLogger(__name__)


async def run_consumer(
    settings: Settings, role: Role[Any], *, stop: asyncio.Event, dead_letters: DeadLetters
) -> None:
    """Consume ``role``'s topics as its consumer group until ``stop`` is set.

    Each poll waits up to ``role.poll_seconds`` for ``role.batch_size`` messages
    (events are cheaper handled in large batches), and the role's handler takes
    them together, decoded.

    On stop, the batch in hand is finished and its offsets stored before the
    consumer leaves the group (closing commits the stored offsets).
    """
    consumer = _subscribed(settings, role)
    decoders = _decoders(settings, role)
    try:
        while not stop.is_set():
            messages = await asyncio.to_thread(
                _poll, consumer, role.batch_size, role.poll_seconds, fill=role.fill
            )
            usable = _usable(messages, role.group)
            if not usable:
                continue
            await _handle(role, decoders, usable, stop, dead_letters)
            for message in usable:
                consumer.store_offsets(message=message)
    finally:
        await asyncio.to_thread(consumer.close)


async def run_consumer_concurrently(
    settings: Settings, role: Role[Any], *, stop: asyncio.Event, dead_letters: DeadLetters
) -> None:
    """Like ``run_consumer``, for messages that are each a lot of work: each is handled
    on its own, up to ``role.concurrency`` at once, and the next is taken as soon as
    one is done. (Handling a polled batch as a whole left cores idle while its last,
    slowest messages ran.)

    A partition's offset is stored up to its first message not yet done, so a
    message done early waits for those before it. On stop, the messages in hand
    are finished and their offsets stored before the consumer leaves the group.
    """
    consumer = _subscribed(settings, role)
    decoders = _decoders(settings, role)
    in_flight = role.concurrency or 1
    offsets = _InOrderOffsets()
    running: set[asyncio.Task[None]] = set()

    def finished(message: confluent_kafka.Message, task: asyncio.Task[None]) -> None:
        running.discard(task)
        if task.cancelled() or task.exception() is not None:
            # Only on stop (see ``_until_done``): not stored, the message comes again.
            log.warning(
                "consumer %s: message at offset %d left unhandled", role.group, message.offset()
            )
            return
        offsets.done(message)

    try:
        while not stop.is_set():
            if len(running) >= in_flight:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            messages = await asyncio.to_thread(
                _store_and_poll,
                consumer,
                offsets.take(),
                in_flight - len(running),
                role.poll_seconds,
            )
            for message in _usable(messages, role.group):
                offsets.add(message)
                task = asyncio.create_task(_handle(role, decoders, [message], stop, dead_letters))
                running.add(task)
                task.add_done_callback(functools.partial(finished, message))
        if running:
            await asyncio.wait(running)
        await asyncio.to_thread(_store, consumer, offsets.take())
    finally:
        await asyncio.to_thread(consumer.close)


async def _handle(
    role: Role[Any],
    decoders: Mapping[str, Decoder[Any]],
    messages: Sequence[confluent_kafka.Message],
    stop: asyncio.Event,
    dead_letters: DeadLetters,
) -> None:
    """Decode and handle ``messages``; when this returns, every one is done or dead-lettered."""
    decoded: list[tuple[confluent_kafka.Message, Any]] = []
    for message in messages:
        try:
            decoded.append((message, decoders[message.topic() or ""](message.value() or b"")))
        except ValueError as exc:  # pydantic's ValidationError, JSON errors
            await _until_done(dead_letters.send, (message, role.group, UNDECODABLE, exc), stop)
    if decoded:
        await _bisect(role, decoded, stop, dead_letters)


async def _bisect(
    role: Role[Any],
    decoded: Sequence[tuple[confluent_kafka.Message, Any]],
    stop: asyncio.Event,
    dead_letters: DeadLetters,
) -> None:
    """Handle the events together; if that fails for good, each half again, down to
    the poison events alone, which are dead-lettered.

    So the good events of a batch (the ingester's hold thousands) are never
    dead-lettered with a poison one, at a few extra passes rather than one
    transaction per event. Handlers are idempotent: events done before a failure
    may be done again.
    """
    try:
        await _until_done(role.handle, ([event for _, event in decoded],), stop, role.group)
        return
    except Exception as exc:
        if is_transient(exc):
            raise  # only once stopping: the messages come again
        if len(decoded) == 1:
            error = (decoded[0][0], role.group, reason_of(exc), exc)
            await _until_done(dead_letters.send, error, stop)
            return
    half = len(decoded) // 2
    await _bisect(role, decoded[:half], stop, dead_letters)
    await _bisect(role, decoded[half:], stop, dead_letters)


async def _until_done(
    call: Callable[..., Awaitable[None]],
    args: tuple[Any, ...],
    stop: asyncio.Event,
    group: str = "",
) -> None:
    """Await ``call(*args)``, retrying transient failures with backoff; permanent ones
    raise at once. Once ``stop`` is set, a failure raises instead of waiting: the
    message was not stored, so it comes again."""
    delay = 0.2
    while True:
        try:
            await call(*args)
            return
        except Exception as exc:
            if stop.is_set() or not is_transient(exc):
                raise
            log.exception("consumer %s: handling failed; retrying in %.1fs", group, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)


@dataclass(slots=True)
class _InHand:
    offset: int
    done: bool = False


class _InOrderOffsets:
    """Per partition, the messages in hand in the order they came, and which are done."""

    def __init__(self) -> None:
        self._in_hand: dict[tuple[str, int], deque[_InHand]] = {}
        self._stored: dict[tuple[str, int], int] = {}

    def add(self, message: confluent_kafka.Message) -> None:
        partition, offset = _position(message)
        self._in_hand.setdefault(partition, deque()).append(_InHand(offset))

    def done(self, message: confluent_kafka.Message) -> None:
        partition, offset = _position(message)
        for entry in self._in_hand[partition]:
            if entry.offset == offset and not entry.done:
                entry.done = True
                return

    def take(self) -> list[confluent_kafka.TopicPartition]:
        """The offsets to store now: past each partition's first run of done messages."""
        ready = []
        for (topic, partition), entries in self._in_hand.items():
            last = None
            while entries and entries[0].done:
                last = entries.popleft().offset
            # A partition taken away and given back comes again from its last commit:
            # a message handled twice never moves the offset back.
            if last is not None and last + 1 > self._stored.get((topic, partition), -1):
                self._stored[(topic, partition)] = last + 1
                ready.append(confluent_kafka.TopicPartition(topic, partition, last + 1))
        return ready


def _position(message: confluent_kafka.Message) -> tuple[tuple[str, int], int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None  # data has all three
    return (topic, partition), offset


def _store_and_poll(
    consumer: confluent_kafka.Consumer,
    offsets: list[confluent_kafka.TopicPartition],
    max_messages: int,
    seconds: float,
) -> list[confluent_kafka.Message]:
    """``_store``, then take up to ``max_messages`` as ``_poll`` does."""
    _store(consumer, offsets)
    return _poll(consumer, max_messages, seconds, fill=False)


def _store(
    consumer: confluent_kafka.Consumer, offsets: list[confluent_kafka.TopicPartition]
) -> None:
    """Store ``offsets``; those of partitions no longer assigned are dropped (their
    messages come again elsewhere)."""
    if offsets:
        try:
            consumer.store_offsets(offsets=offsets)
        except confluent_kafka.KafkaException as exc:
            log.info("offsets not stored after a rebalance: %s", exc)


def _subscribed(settings: Settings, role: Role[Any]) -> confluent_kafka.Consumer:
    overrides = {} if role.fetch_wait_ms is None else {"fetch.wait.max.ms": role.fetch_wait_ms}
    consumer = make_consumer(settings, role.group, **overrides)
    topic_names = [settings.topic(t) for t in role.reads]
    if role.on_assign is None:
        consumer.subscribe(topic_names)
    else:
        consumer.subscribe(topic_names, on_assign=role.on_assign)
    return consumer


def _decoders(settings: Settings, role: Role[Any]) -> dict[str, Decoder[Any]]:
    """The role's decoders by full topic name, as messages name their topic."""
    return {settings.topic(topic): decode for topic, decode in role.reads.items()}


def _usable(
    messages: Sequence[confluent_kafka.Message], group: str
) -> list[confluent_kafka.Message]:
    """The messages that carry data; errors other than reaching a partition's end are logged."""
    usable = []
    for message in messages:
        error = message.error()
        if error is None:
            usable.append(message)
        elif error.code() != confluent_kafka.KafkaError._PARTITION_EOF:
            log.warning("consumer %s: %s", group, error)
    return usable


def _poll(
    consumer: confluent_kafka.Consumer, max_messages: int, seconds: float, fill: bool
) -> list[confluent_kafka.Message]:
    if fill:
        messages: list[confluent_kafka.Message] = consumer.consume(max_messages, seconds)
        return messages
    messages = consumer.consume(1, seconds)
    if messages and max_messages > 1:
        messages += consumer.consume(max_messages - 1, 0)
    return messages
