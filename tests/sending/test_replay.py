"""Every Kafka message handled twice: replaying the topics from the start changes nothing.

Each test runs a campaign to the end on the real stack, snapshots everything
it wrote, then reads ``campaigns.v1``, ``campaign-batches.v1`` and the retry
topic from offset zero with a new consumer group and hands the campaign's
messages to a fresh planner and sender, exactly as a consumer group whose
offsets were lost would.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import confluent_kafka
import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import (
    TOPIC_CAMPAIGN_BATCHES,
    TOPIC_CAMPAIGN_BATCHES_RETRY,
    TOPIC_CAMPAIGNS,
    CampaignBatch,
    CampaignQueued,
)
from service.kafka import Producer, make_consumer
from service.models import Campaign, CampaignDelivery
from service.settings import Settings
from service.stats import counters as stats_counters
from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from tests.sending.test_sending import Api
from worker.planner import Planner
from worker.providers import build_provider
from worker.ratelimit import Pacer
from worker.sender import Sender

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


REPLAYED = (TOPIC_CAMPAIGNS, TOPIC_CAMPAIGN_BATCHES, TOPIC_CAMPAIGN_BATCHES_RETRY)


def read_from_start(settings: Settings, campaign_id: str) -> dict[str, list[Any]]:
    """Every message of the replayed topics about ``campaign_id``, by topic, oldest first."""
    consumer = make_consumer(settings, f"replay-{uuid.uuid4().hex}")
    try:
        wanted: list[confluent_kafka.TopicPartition] = []
        remaining: dict[tuple[str, int], int] = {}
        for name in REPLAYED:
            topic = settings.topic(name)
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(
                    confluent_kafka.TopicPartition(topic, partition), timeout=10
                )
                if high > low:
                    wanted.append(
                        confluent_kafka.TopicPartition(
                            topic, partition, confluent_kafka.OFFSET_BEGINNING
                        )
                    )
                    remaining[(topic, partition)] = high
        consumer.assign(wanted)
        found: dict[str, list[Any]] = {settings.topic(name): [] for name in REPLAYED}
        while remaining:
            message = consumer.poll(10)
            assert message is not None, f"replay stalled before {remaining}"
            assert message.error() is None, message.error()
            place = (message.topic() or "", message.partition() or 0)
            if _campaign_of(message.value()) == campaign_id:
                found[place[0]].append(message)
            if place in remaining and (message.offset() or 0) + 1 >= remaining[place]:
                del remaining[place]
        return found
    finally:
        consumer.close()


def _campaign_of(value: bytes | None) -> Any:
    try:
        return orjson.loads(value or b"{}").get("campaign_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None  # another test's poison message (tests/sending/test_runner.py)


async def snapshot(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> tuple[Any, ...]:
    """Everything the pipeline writes for a campaign."""
    key = uuid.UUID(campaign_id)
    async with sessions() as session:
        campaign = (await session.execute(select(Campaign).where(Campaign.id == key))).scalar_one()
        deliveries = (
            (
                await session.execute(
                    select(CampaignDelivery)
                    .where(CampaignDelivery.campaign_id == key)
                    .order_by(CampaignDelivery.id)
                )
            )
            .scalars()
            .all()
        )
        counters = await stats_counters.sums(session, key)
    columns = CampaignDelivery.__table__.columns.keys()
    return (
        (campaign.status, campaign.send_round, campaign.completed_at, campaign.updated_at),
        [tuple(getattr(row, column) for column in columns) for row in deliveries],
        counters,
    )


async def replay(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], campaign_id: str
) -> dict[str, int]:
    """Hand the campaign's messages, from the start, to a new planner and sender."""
    found = await asyncio.to_thread(read_from_start, settings, campaign_id)
    topic = settings.topic
    producer = Producer(settings)
    provider = build_provider(settings)
    try:
        planner = Planner(
            sessions, producer, settings.provider_batch_size, settings.send_window_batches
        )
        sender = Sender(sessions, provider, Pacer(1000), producer, settings)
        # Decoded as the runner does, into each topic's event type.
        await planner.handle(
            [CampaignQueued.model_validate_json(m.value()) for m in found[topic(TOPIC_CAMPAIGNS)]]
        )
        for name in (TOPIC_CAMPAIGN_BATCHES, TOPIC_CAMPAIGN_BATCHES_RETRY):
            await sender.handle(
                [CampaignBatch.model_validate_json(m.value()) for m in found[topic(name)]]
            )
    finally:
        await provider.aclose()
        await asyncio.to_thread(producer.close)
    return {name: len(found[settings.topic(name)]) for name in REPLAYED}


def provider_requests(fake: FakeResend, campaign_id: str) -> int:
    return sum(1 for r in fake.requests if (r.idempotency_key or "").startswith(campaign_id))


async def assert_replay_changes_nothing(
    api: Api,
    campaign_id: str,
    fake: FakeResend,
    migrated: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> dict[str, int]:
    before = await snapshot(sessions, campaign_id)
    requests_before = provider_requests(fake, campaign_id)
    messages_before = api.per_recipient(fake)

    replayed = await replay(migrated, sessions, campaign_id)
    # Anything the replay wrongly re-queued would be picked up by the running workers.
    await asyncio.sleep(2)

    assert await snapshot(sessions, campaign_id) == before
    assert provider_requests(fake, campaign_id) == requests_before
    assert api.per_recipient(fake) == messages_before
    return replayed


async def test_replaying_a_campaign_that_needed_retries_changes_nothing(
    api: Api, fake: FakeResend, migrated: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.leads(250)
    # SEND_MAX_TRIES is 2 in the suite: batches go through the retry topic.
    fake.fail_next(6, status=500, path="/emails/batch")
    campaign_id = (await api.create())["id"]
    stats = await api.wait_status(campaign_id, "sent")
    assert stats["sent"] == 250

    replayed = await assert_replay_changes_nothing(api, campaign_id, fake, migrated, sessions)
    assert replayed[TOPIC_CAMPAIGNS] == 1
    assert replayed[TOPIC_CAMPAIGN_BATCHES] == 3
    assert replayed[TOPIC_CAMPAIGN_BATCHES_RETRY] >= 1
    assert set(api.per_recipient(fake).values()) == {1}


async def test_replaying_a_redriven_campaign_changes_nothing(
    api: Api, fake: FakeResend, migrated: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Old-round batch messages must not resend rows that a later round sent."""
    await api.leads(120)
    fake.fail_next(1, status=422, path="/emails/batch")
    campaign_id = (await api.create())["id"]
    await api.wait_status(campaign_id, "sent")
    assert (await api.post(campaign_id, "retry-failed")).status_code == 202
    stats = await api.wait_status(campaign_id, "sent")
    assert (stats["sent"], stats["failed"]) == (120, 0)

    replayed = await assert_replay_changes_nothing(api, campaign_id, fake, migrated, sessions)
    assert replayed[TOPIC_CAMPAIGNS] == 1
    # Two batches in round 0 (one rejected), its failed rows again in round 1.
    assert replayed[TOPIC_CAMPAIGN_BATCHES] == 3
    assert set(api.per_recipient(fake).values()) == {1}
