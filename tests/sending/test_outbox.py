"""The outbox's fast path for rows a statement returned as it wrote them, and the
producer it relies on."""

from __future__ import annotations

import asyncio
import uuid

import confluent_kafka
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import TOPIC_CAMPAIGN_BATCHES, CampaignBatch
from service import outbox
from service.kafka import Producer
from service.settings import Settings


async def test_published_rows_are_deleted_and_rows_the_broker_refused_stay(
    sessions: async_sessionmaker[AsyncSession], migrated: Settings
) -> None:
    # Batches of a campaign that does not exist: a sender that reads them skips them.
    payload = CampaignBatch(campaign_id=uuid.uuid4(), batch_no=0).to_bytes()
    async with sessions.begin() as session:
        rows = [
            outbox.OutboxRow(
                await outbox.add(session, TOPIC_CAMPAIGN_BATCHES, "k", payload),
                TOPIC_CAMPAIGN_BATCHES,
                "k",
                payload,
            )
            for _ in range(2)
        ]
    down = migrated.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    refusing = Producer(down, **{"message.timeout.ms": 500})
    working = Producer(migrated)
    try:
        assert not await outbox.publish_rows(sessions, refusing, rows[:1])
        assert await outbox.publish_rows(sessions, working, rows[1:])
    finally:
        refusing.close(timeout=0.1)
        working.close()

    async with sessions.begin() as session:
        left = (
            await session.scalars(
                text("DELETE FROM outbox WHERE id = ANY(:ids) RETURNING id"),
                {"ids": [row.id for row in rows]},
            )
        ).all()
    assert left == [rows[0].id]  # for the relay to publish


class FailedForGood:
    """A producer in librdkafka's fatal state: it refuses every message at once."""

    def produce(self, *args: object, **kwargs: object) -> None:
        # As librdkafka reports it at produce: the code, without the fatal flag.
        error = confluent_kafka.KafkaError(confluent_kafka.KafkaError._FATAL, "Fatal error")
        raise confluent_kafka.KafkaException(error)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


async def test_a_producer_that_failed_for_good_is_replaced_and_the_message_goes_out(
    migrated: Settings,
) -> None:
    producer = Producer(migrated)
    producer._producer = FailedForGood()  # type: ignore[assignment]
    try:
        payload = CampaignBatch(campaign_id=uuid.uuid4(), batch_no=0).to_bytes()
        await asyncio.wait_for(producer.send([(TOPIC_CAMPAIGN_BATCHES, "k", payload)]), 30)
    finally:
        producer.close()

    assert isinstance(producer._producer, confluent_kafka.Producer)  # a new one
