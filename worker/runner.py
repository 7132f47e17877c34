"""The consume loop every role shares: at-least-once, offsets stored after commit.

``run_consumer`` polls a batch, hands it to the role's ``handle``, and stores
the offsets only when ``handle`` returned (its database work committed). When
``handle`` raises, the same messages are retried with backoff, so a database
or provider outage delays work but never skips it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

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
    on_assign: OnAssign | None = None,
    fill: bool = True,
) -> None:
    """Consume ``topics`` as consumer group ``group`` until ``stop`` is set.

    With ``fill``, each poll waits up to ``poll_seconds`` for ``max_messages``
    (events are cheaper handled in large batches); without, it returns as soon
    as a message is there, with whatever else has arrived: when each message is
    a lot of work, waiting for more only leaves what is in hand idle.

    On stop, the batch in hand is finished and its offsets stored before the
    consumer leaves the group (closing commits the stored offsets).
    """
    consumer = make_consumer(settings, group)
    topic_names = [settings.topic(t) for t in topics]
    if on_assign is None:
        consumer.subscribe(topic_names)
    else:
        consumer.subscribe(topic_names, on_assign=on_assign)
    try:
        while not stop.is_set():
            messages = await asyncio.to_thread(_poll, consumer, max_messages, poll_seconds, fill)
            usable = []
            for message in messages:
                error = message.error()
                if error is None:
                    usable.append(message)
                elif error.code() != confluent_kafka.KafkaError._PARTITION_EOF:
                    log.warning("consumer %s: %s", group, error)
            if not usable:
                continue
            await _handle_until_done(handle, usable, stop, group)
            for message in usable:
                consumer.store_offsets(message=message)
    finally:
        await asyncio.to_thread(consumer.close)


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
