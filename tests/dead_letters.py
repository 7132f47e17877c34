"""Poison messages in tests: produce them, then find the dead letter each became."""

from __future__ import annotations

import asyncio
import time
import uuid

import confluent_kafka

from schemas.events import TOPIC_DEAD_LETTERS
from service.kafka import Producer, make_consumer
from service.settings import Settings


def _find(settings: Settings, key: bytes, within: float) -> confluent_kafka.Message | None:
    consumer = make_consumer(settings, f"test-dead-letters-{uuid.uuid4().hex}")
    consumer.subscribe([settings.topic(TOPIC_DEAD_LETTERS)])
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None and message.key() == key:
                    return message
    finally:
        consumer.close()
    return None


async def dead_letter(
    settings: Settings, key: str | bytes, within: float = 30.0
) -> tuple[bytes | None, dict[str, str]]:
    """The value and headers of the dead letter with ``key``; fails when none comes."""
    wanted = key.encode() if isinstance(key, str) else key
    message = await asyncio.to_thread(_find, settings, wanted, within)
    assert message is not None, f"no dead letter with key {key!r} within {within}s"
    headers = {
        str(h[0]): h[1].decode() if isinstance(h[1], bytes) else str(h[1])
        for h in message.headers() or []
    }
    return message.value(), headers


async def produce(settings: Settings, topic: str, key: str, *values: bytes) -> None:
    """Produce ``values`` to ``topic`` (without prefix), all with ``key``, in order."""
    producer = Producer(settings)
    try:
        await producer.send((topic, key, value) for value in values)
    finally:
        producer.close()
