"""The outbox: the unit of work that publishes what it committed, the fast path for rows
in hand, and the producer it relies on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from types import SimpleNamespace

import confluent_kafka
import httpx
import pytest
from fastapi import Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import TOPIC_CAMPAIGN_BATCHES, TOPIC_CAMPAIGNS, CampaignBatch
from service import outbox
from service.campaigns import logic, repository, sending_repository
from service.errors import KafkaUnavailable
from service.http import transaction
from service.kafka import Outgoing, Producer
from service.settings import Settings
from service.sponsors import repository as sponsors
from tests import factories
from tests.conftest import TokenFactory


async def test_published_rows_are_deleted_and_rows_the_broker_refused_stay(
    sessions: async_sessionmaker[AsyncSession], migrated: Settings
) -> None:
    # Batches of a campaign that does not exist: a sender that reads them skips them.
    payload = CampaignBatch(campaign_id=uuid.uuid4(), batch_no=0).to_bytes()
    key = f"refused-{uuid.uuid4()}"
    async with sessions.begin() as session:  # outside a unit of work: nobody publishes
        await outbox.add(session, [(TOPIC_CAMPAIGN_BATCHES, key, payload)] * 2)
        rows = [
            outbox.OutboxRow(row_id, TOPIC_CAMPAIGN_BATCHES, key, payload)
            for row_id in await session.scalars(
                text("SELECT id FROM outbox WHERE key = :k ORDER BY id"), {"k": key}
            )
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

    def purge(self, blocking: bool = True) -> None:
        return None

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


class FailsAtPoll(FailedForGood):
    """librdkafka raising its fatal error from ``poll``, as it does once a restarted
    broker no longer knows the idempotent producer's id."""

    def poll(self, timeout: float) -> int:
        error = confluent_kafka.KafkaError(
            confluent_kafka.KafkaError.UNKNOWN_PRODUCER_ID, "unknown producer id", fatal=True
        )
        raise confluent_kafka.KafkaException(error)


async def test_a_fatal_error_raised_by_poll_leaves_the_producer_serving_and_replaced(
    migrated: Settings,
) -> None:
    producer = Producer(migrated)
    producer._producer = FailsAtPoll()  # type: ignore[assignment]
    try:
        await asyncio.sleep(0.3)  # the poll thread meets the error
        payload = CampaignBatch(campaign_id=uuid.uuid4(), batch_no=0).to_bytes()
        await asyncio.wait_for(producer.send([(TOPIC_CAMPAIGN_BATCHES, "k", payload)]), 30)
    finally:
        producer.close()

    assert isinstance(producer._producer, confluent_kafka.Producer)  # a new one, polled


async def test_a_replaced_producer_fails_what_it_held_at_once_for_the_callers_to_retry(
    migrated: Settings,
) -> None:
    down = migrated.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    producer = Producer(down)  # messages wait 30 s before they time out
    try:
        payload = CampaignBatch(campaign_id=uuid.uuid4(), batch_no=0).to_bytes()
        held = asyncio.create_task(producer.send([(TOPIC_CAMPAIGN_BATCHES, "k", payload)]))
        await asyncio.sleep(0.2)
        producer._renew()
        with pytest.raises(KafkaUnavailable):
            await asyncio.wait_for(held, 5)
    finally:
        producer.close(timeout=0.1)


class CallbackFails(FailedForGood):
    """A delivery callback that raised: ``poll`` raises its exception."""

    def poll(self, timeout: float) -> int:
        raise RuntimeError("Event loop is closed")


async def test_an_exception_from_a_callback_leaves_the_poll_thread_serving(
    migrated: Settings,
) -> None:
    producer = Producer(migrated)
    real = producer._producer
    producer._producer = CallbackFails()  # type: ignore[assignment]
    try:
        await asyncio.sleep(0.3)  # the poll thread meets the exception
        assert producer._thread.is_alive()
        producer._producer = real
        payload = CampaignBatch(campaign_id=uuid.uuid4(), batch_no=0).to_bytes()
        await asyncio.wait_for(producer.send([(TOPIC_CAMPAIGN_BATCHES, "k", payload)]), 30)
    finally:
        producer.close()


class RecordingProducer(Producer):
    """The real producer, remembering what it was asked to send."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sent: list[Outgoing] = []

    async def send(self, messages: Iterable[Outgoing]) -> None:
        batch = list(messages)
        self.sent += batch
        await super().send(batch)


async def _rows_keyed(sessions: async_sessionmaker[AsyncSession], key: str) -> int:
    async with sessions() as session:
        found = await session.scalar(text("SELECT count(*) FROM outbox WHERE key = :k"), {"k": key})
    return int(found or 0)


async def test_a_unit_of_work_publishes_its_committed_rows_once_and_deletes_them(
    sessions: async_sessionmaker[AsyncSession], migrated: Settings
) -> None:
    producer = RecordingProducer(migrated)
    key = f"committed-{uuid.uuid4()}"
    payload = CampaignBatch(campaign_id=uuid.uuid4(), batch_no=0).to_bytes()
    try:
        async with outbox.unit_of_work(sessions, producer) as work:
            async with work.transaction() as session:
                await outbox.add(session, [(TOPIC_CAMPAIGN_BATCHES, key, payload)])
            assert producer.sent == []  # committed, published only once the work is done
            async with work.transaction() as session:
                await outbox.add(session, [(TOPIC_CAMPAIGN_BATCHES, key, payload)])
    finally:
        producer.close()

    assert producer.sent == [(TOPIC_CAMPAIGN_BATCHES, key, payload)] * 2
    assert await _rows_keyed(sessions, key) == 0


async def test_a_unit_of_work_that_fails_publishes_nothing_and_its_rollback_keeps_no_row(
    sessions: async_sessionmaker[AsyncSession], migrated: Settings
) -> None:
    producer = RecordingProducer(migrated)
    key = f"rolled-back-{uuid.uuid4()}"
    payload = CampaignBatch(campaign_id=uuid.uuid4(), batch_no=0).to_bytes()
    try:
        with pytest.raises(RuntimeError):
            async with (
                outbox.unit_of_work(sessions, producer) as work,
                work.transaction() as session,
            ):
                await outbox.add(session, [(TOPIC_CAMPAIGN_BATCHES, key, payload)])
                raise RuntimeError("the request failed after writing")
    finally:
        producer.close()

    assert producer.sent == []
    assert await _rows_keyed(sessions, key) == 0


def _request(sessions: async_sessionmaker[AsyncSession], producer: Producer) -> Request:
    """A request of an app whose state holds these sessions and this producer."""
    state = SimpleNamespace(sessions=sessions, producer=producer)
    return Request({"type": "http", "app": SimpleNamespace(state=state)})


async def test_an_api_actions_event_is_published_after_its_commit(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
) -> None:
    draft = await factories.draft(client, sponsor, token(sponsor))
    producer = RecordingProducer(migrated)
    try:
        async with transaction(_request(sessions, producer)) as session:
            owner = await sponsors.get(session, sponsor)
            campaign = await repository.get(session, sponsor, uuid.UUID(draft["id"]), lock=True)
            await logic.queue(session, owner, campaign)
            assert producer.sent == []  # not before the commit
    finally:
        producer.close()

    assert [(topic, key) for topic, key, _ in producer.sent] == [(TOPIC_CAMPAIGNS, draft["id"])]
    assert await _rows_keyed(sessions, draft["id"]) == 0


async def test_an_api_action_that_rolls_back_publishes_nothing_and_changes_nothing(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
) -> None:
    headers = token(sponsor)
    draft = await factories.draft(client, sponsor, headers)
    producer = RecordingProducer(migrated)
    try:
        with pytest.raises(RuntimeError):
            async with transaction(_request(sessions, producer)) as session:
                owner = await sponsors.get(session, sponsor)
                campaign = await repository.get(session, sponsor, uuid.UUID(draft["id"]), lock=True)
                await logic.queue(session, owner, campaign)
                raise RuntimeError("the request failed after queueing")
    finally:
        producer.close()

    assert producer.sent == []
    assert await _rows_keyed(sessions, draft["id"]) == 0
    answer = await client.get(
        f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}", headers=headers
    )
    assert answer.json()["status"] == "draft"


async def test_the_batch_a_record_releases_is_published_by_the_senders_unit_of_work(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
) -> None:
    draft = await factories.draft(client, sponsor, token(sponsor))
    campaign_id = uuid.UUID(draft["id"])
    async with sessions.begin() as session:  # two batches of one row, the first in flight
        await session.execute(
            text(
                "INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no) "
                "SELECT :id, n, 'r' || n || '@example.com', n FROM generate_series(0, 1) AS n"
            ),
            {"id": campaign_id},
        )
        await session.execute(
            text(
                "UPDATE campaigns SET status = 'sending', batch_count = 2, enqueue_cursor = 0 "
                "WHERE id = :id"
            ),
            {"id": campaign_id},
        )
    producer = RecordingProducer(migrated)
    try:
        async with outbox.unit_of_work(sessions, producer) as work:
            async with work.driver() as driver:
                outcome = await sending_repository.record_batch_outcome(
                    driver, campaign_id, 0, [], []
                )
            assert producer.sent == []  # written and committed, published as the work ends
    finally:
        producer.close()
        async with sessions.begin() as session:  # a sender that reads batch 1 skips it
            await session.execute(
                text("UPDATE campaigns SET status = 'cancelled' WHERE id = :id"),
                {"id": campaign_id},
            )

    assert outcome.released
    assert producer.sent == [
        (
            TOPIC_CAMPAIGN_BATCHES,
            f"{campaign_id}:1",
            CampaignBatch(campaign_id=campaign_id, batch_no=1).to_bytes(),
        )
    ]
    assert await _rows_keyed(sessions, f"{campaign_id}:1") == 0
