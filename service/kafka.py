"""Kafka plumbing shared by the API and the workers: producer, consumers, topics.

The producer is idempotent (``acks=all``); ``send`` resolves only when the
broker has acknowledged every message, so callers can delete outbox rows or
answer 2xx afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.events import ALL_TOPICS, TOPIC_CAMPAIGN_BATCHES
from service.errors import KafkaUnavailable
from service.settings import KafkaConfig, Settings

log = logging.getLogger(__name__)

Outgoing = tuple[str, str, bytes]  # (topic without prefix, key, value)
Headers = list[tuple[str, str | bytes | None]]
_Record = tuple[str, str | bytes | None, bytes | None, Headers | None]


class Producer:
    """An asyncio face on confluent-kafka's producer; a thread serves its callbacks."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        config: KafkaConfig = {
            **settings.kafka_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": 30_000,
            **overrides,
        }
        self._config = config
        self._producer = confluent_kafka.Producer(config)
        self._running = True
        self._stuck = False
        self._retired: list[confluent_kafka.Producer] = []
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-producer", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while self._running:
            self._poll(self._producer, 0.1)
            # Replaced producers still owe callbacks for what they hold: serve them until empty.
            for old in list(self._retired):
                self._poll(old, 0)
                if len(old) == 0:
                    self._retired.remove(old)

    def _poll(self, producer: confluent_kafka.Producer, timeout: float) -> None:
        """Serve ``producer``'s callbacks. A fatal error (an idempotent producer whose
        broker lost its state) is raised here once, not as a delivery report, and so
        is an exception from a callback: the thread must live on to serve the reports
        that follow, or every later send would wait forever. After a fatal error the
        next send starts a new producer."""
        try:
            producer.poll(timeout)
        except confluent_kafka.KafkaException as exc:
            log.warning("kafka producer failed: %s", exc)
            if producer is self._producer:
                self._stuck = True
        except Exception:
            log.exception("kafka producer callback failed")

    async def send(self, messages: Iterable[Outgoing]) -> None:
        """Produce every message and wait until the broker has acknowledged all of them."""
        await self._send((topic, key, value, None) for topic, key, value in messages)

    async def send_one(
        self, topic: str, key: str | bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        """Produce one message with headers (a dead letter keeps its original's key,
        value and headers) and wait until the broker has acknowledged it."""
        await self._send([(topic, key, value, headers)])

    async def _send(self, records: Iterable[_Record]) -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []

        def on_delivery(fut: asyncio.Future[None]) -> Any:
            def callback(err: Any, _msg: Any) -> None:
                if err is None:
                    loop.call_soon_threadsafe(_resolve, fut, None)
                else:
                    if (
                        _failed_for_good(err)
                        or err.code() == confluent_kafka.KafkaError._MSG_TIMED_OUT
                    ):
                        self._stuck = True
                    loop.call_soon_threadsafe(_resolve, fut, KafkaUnavailable(str(err)))

            return callback

        if self._stuck:
            self._renew()

        for topic, key, value, headers in records:
            fut: asyncio.Future[None] = loop.create_future()
            futures.append(fut)
            renewed = False
            while True:
                try:
                    self._producer.produce(
                        self._settings.topic(topic),
                        value=value,
                        key=key,
                        headers=headers,
                        on_delivery=on_delivery(fut),
                    )
                    break
                except BufferError:
                    # The local queue is full: let the poll thread drain it.
                    await asyncio.sleep(0.01)
                except confluent_kafka.KafkaException as exc:
                    # A producer that failed for good between two sends refuses at once
                    # (``_FATAL``, without the fatal flag), before any delivery report
                    # could say so: renewed once, it takes the message.
                    if renewed or not _failed_for_good(exc.args[0]):
                        raise KafkaUnavailable(str(exc)) from exc
                    self._renew()
                    renewed = True
        if futures:
            await asyncio.gather(*futures)

    def _renew(self) -> None:
        """Replace a producer that is stuck or failed for good.

        An idempotent producer whose broker lost its state (a restarted broker
        without storage, a new cluster) keeps retrying with a producer id the
        broker no longer knows, and every message times out; a new producer
        gets a new id and works at once. What the old one still holds fails now
        (purged) rather than each message at its timeout: the callers retry
        through the new one.
        """
        log.warning("kafka producer timed out or failed; starting a new one")
        self._producer.purge(blocking=False)
        self._retired.append(self._producer)
        self._producer = confluent_kafka.Producer(self._config)
        self._stuck = False

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._running = False
        self._thread.join(timeout=1)


def _failed_for_good(error: confluent_kafka.KafkaError) -> bool:
    return bool(error.fatal()) or error.code() == confluent_kafka.KafkaError._FATAL


def _resolve(fut: asyncio.Future[None], error: Exception | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


def make_consumer(settings: Settings, group: str, **overrides: Any) -> confluent_kafka.Consumer:
    """An at-least-once consumer: offsets are stored by hand after the work is committed."""
    session_ms = settings.kafka_session_timeout_ms
    config: KafkaConfig = {
        **settings.kafka_config(),
        "group.id": settings.topic(group),
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": max(session_ms // 6, 100),
        "max.poll.interval.ms": max(300_000, session_ms),
        **overrides,
    }
    return confluent_kafka.Consumer(config)


def create_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create every topic that does not exist yet; returns the names created."""
    admin = AdminClient(settings.kafka_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(
            settings.topic(name),
            num_partitions=(
                settings.kafka_batch_partitions
                if name == TOPIC_CAMPAIGN_BATCHES
                else settings.kafka_partitions
            ),
            replication_factor=settings.kafka_replication_factor,
        )
        for name in ALL_TOPICS
        if settings.topic(name) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def ping(settings: Settings, timeout: float = 2.0) -> None:
    """Raise unless the cluster answers a metadata request."""
    AdminClient(settings.kafka_config()).list_topics(timeout=timeout)
