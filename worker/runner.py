"""The consume loops of every role: at-least-once, offsets stored after commit.

``run_consumer`` polls a batch, hands it to the role's ``handle``, and stores
the offsets only when ``handle`` returned (its database work committed).
``run_consumer_concurrently`` (the sender's) hands over one message at a time,
several at once, and stores a partition's offsets as far as its messages are
done. When ``handle`` raises, the same messages are retried with backoff, so a
database or provider outage delays work but never skips it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import confluent_kafka

from service.kafka import make_consumer
from service.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[confluent_kafka.Message]], Awaitable[None]]
# Called from the consume thread with the consumer and its new assignment.
OnAssign = Callable[[confluent_kafka.Consumer, list[confluent_kafka.TopicPartition]], None]


async def run_consumer(
    settings: Settings,
    *,
    group: str,
    topics: Sequence[str],
    handle: Handler,
    stop: asyncio.Event,
    max_messages: int = 100,
    poll_seconds: float = 0.5,
) -> None:
    """Consume ``topics`` as consumer group ``group`` until ``stop`` is set.

    Each poll waits up to ``poll_seconds`` for ``max_messages`` (events are
    cheaper handled in large batches), and ``handle`` takes them together.

    On stop, the batch in hand is finished and its offsets stored before the
    consumer leaves the group (closing commits the stored offsets).
    """
    consumer = _subscribed(settings, group, topics, None)
    try:
        while not stop.is_set():
            messages = await asyncio.to_thread(
                _poll, consumer, max_messages, poll_seconds, fill=True
            )
            usable = _usable(messages, group)
            if not usable:
                continue
            await _handle_until_done(handle, usable, stop, group)
            for message in usable:
                consumer.store_offsets(message=message)
    finally:
        await asyncio.to_thread(consumer.close)


async def run_consumer_concurrently(
    settings: Settings,
    *,
    group: str,
    topics: Sequence[str],
    handle: Handler,
    stop: asyncio.Event,
    in_flight: int,
    poll_seconds: float = 0.5,
    on_assign: OnAssign | None = None,
) -> None:
    """Like ``run_consumer``, for messages that are each a lot of work: each is handled
    on its own, up to ``in_flight`` at once, and the next is taken as soon as one
    is done. (Handling a polled batch as a whole left cores idle while its last,
    slowest messages ran.)

    A partition's offset is stored up to its first message not yet done, so a
    message done early waits for those before it. On stop, the messages in hand
    are finished and their offsets stored before the consumer leaves the group.
    """
    consumer = _subscribed(settings, group, topics, on_assign)
    offsets = _InOrderOffsets()
    running: set[asyncio.Task[None]] = set()

    def finished(message: confluent_kafka.Message, task: asyncio.Task[None]) -> None:
        running.discard(task)
        if task.cancelled() or task.exception() is not None:
            # Only on stop (see ``_handle_until_done``): not stored, the message comes again.
            log.warning("consumer %s: message at offset %d left unhandled", group, message.offset())
            return
        offsets.done(message)

    try:
        while not stop.is_set():
            if len(running) >= in_flight:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            messages = await asyncio.to_thread(
                _store_and_poll, consumer, offsets.take(), in_flight - len(running), poll_seconds
            )
            for message in _usable(messages, group):
                offsets.add(message)
                task = asyncio.create_task(_handle_until_done(handle, [message], stop, group))
                running.add(task)
                task.add_done_callback(functools.partial(finished, message))
        if running:
            await asyncio.wait(running)
        await asyncio.to_thread(_store, consumer, offsets.take())
    finally:
        await asyncio.to_thread(consumer.close)


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


def _subscribed(
    settings: Settings, group: str, topics: Sequence[str], on_assign: OnAssign | None
) -> confluent_kafka.Consumer:
    consumer = make_consumer(settings, group)
    topic_names = [settings.topic(t) for t in topics]
    if on_assign is None:
        consumer.subscribe(topic_names)
    else:
        consumer.subscribe(topic_names, on_assign=on_assign)
    return consumer


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


async def _handle_until_done(
    handle: Handler, messages: Sequence[confluent_kafka.Message], stop: asyncio.Event, group: str
) -> None:
    delay = 0.2
    while True:
        try:
            await handle(messages)
            return
        except Exception:
            if stop.is_set():
                raise
            log.exception("consumer %s: handling failed; retrying in %.1fs", group, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)
