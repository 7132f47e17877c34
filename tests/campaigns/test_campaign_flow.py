"""A campaign travels API → Kafka → planner → sender → Resend (fake) → delivery rows."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import CampaignBatch
from service import db
from service.campaigns import logic, repository, sending_repository
from service.kafka import Producer, create_topics
from service.models import Campaign, CampaignDelivery
from service.settings import Settings
from service.sponsors import repository as sponsors
from service.stats import counters
from tests import factories
from tests.conftest import eventually
from tests.fakes.resend_server import FakeResend
from worker.planner import Planner
from worker.sender import Sender

pytestmark = pytest.mark.usefixtures("workers")


async def _wait_sent(
    client: httpx.AsyncClient, sponsor: str, campaign_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        stats = (
            await client.get(
                f"/api/v1/sponsors/{sponsor}/campaigns/{campaign_id}/stats", headers=headers
            )
        ).json()
        return stats if stats["status"] == "sent" else None

    result: dict[str, Any] = await eventually(done, within=90)
    return result


async def test_every_lead_gets_exactly_one_personalized_message(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    fake_resend: FakeResend,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = token(sponsor)
    domain = f"{sponsor}.example"
    await factories.add_leads(client, sponsor, headers, factories.leads(1000, domain=domain))

    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=factories.campaign()
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "queued"
    assert created["total_recipients"] == 1000

    stats = await _wait_sent(client, sponsor, created["id"], headers)
    assert stats["sent"] == 1000
    assert stats["pending"] == 0
    assert stats["failed"] == 0

    messages = [m for m in fake_resend.messages if m.to[0].endswith("@" + domain)]
    per_recipient = Counter(m.to[0] for m in messages)
    assert len(per_recipient) == 1000
    assert set(per_recipient.values()) == {1}
    by_address = {m.to[0]: m for m in messages}
    assert by_address[f"lead1@{domain}"].subject == "Hello Lead 1"
    assert by_address[f"lead0@{domain}"].subject == "Hello there"
    assert "welcome from Company 1" in (by_address[f"lead1@{domain}"].text or "")
    assert by_address[f"lead1@{domain}"].tag("campaign_id") == created["id"]

    async with sessions() as session:
        rows = (
            await session.execute(
                select(
                    CampaignDelivery.status,
                    CampaignDelivery.provider_message_id,
                    CampaignDelivery.recipient_email,
                ).where(CampaignDelivery.campaign_id == uuid.UUID(created["id"]))
            )
        ).all()
    assert len(rows) == 1000
    assert {row.status for row in rows} == {"sent"}
    assert {row.provider_message_id for row in rows} == {
        by_address[row.recipient_email].id for row in rows
    }


async def test_deliveries_list_pages_through_every_row(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    await factories.add_leads(
        client, sponsor, headers, factories.leads(25, domain=f"{sponsor}.example")
    )
    created = (
        await client.post(
            f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=factories.campaign()
        )
    ).json()
    await _wait_sent(client, sponsor, created["id"], headers)

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 10, "status": "sent"}
        if cursor:
            params["cursor"] = cursor
        page = (
            await client.get(
                f"/api/v1/sponsors/{sponsor}/campaigns/{created['id']}/deliveries",
                headers=headers,
                params=params,
            )
        ).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 25
    assert len({row["id"] for row in seen}) == 25
    assert all(row["provider_message_id"] and row["sent_at"] for row in seen)


@pytest.mark.parametrize("templates", [True, False], ids=["template", "whole_bodies"])
async def test_a_batch_handled_twice_sends_each_recipient_once(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    fake_resend: FakeResend,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
    templates: bool,
) -> None:
    """The same batch message delivered twice, even concurrently, to two senders, sends
    once per recipient: with the body as a template (decided once) or whole."""
    headers = token(sponsor)
    domain = f"{sponsor}.example"
    await factories.add_leads(client, sponsor, headers, factories.leads(150, domain=domain))
    draft = await factories.draft(client, sponsor, headers)
    campaign_id = uuid.UUID(draft["id"])
    # Plan it here, publishing to a throwaway topic, so only this test's sender sees the batches.
    async with sessions.begin() as session:
        await session.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(status="queued")
        )
        if not templates:  # decided as for a round whose template Resend refused
            await sending_repository.set_template_decision(session, campaign_id, "")
    isolated = migrated.model_copy(
        update={"kafka_topic_prefix": f"isolated-{uuid.uuid4().hex[:8]}-"}
    )
    # Topics of their own, created first: a publish to a missing one would wait out its timeout.
    await asyncio.to_thread(create_topics, isolated)
    producer = Producer(isolated)
    try:
        await Planner(sessions, producer, batch_size=100, window=24).plan(campaign_id)
    finally:
        producer.close()

    from worker.providers.resend import ResendProvider
    from worker.ratelimit import Pacer

    assert migrated.resend_api_key is not None
    provider = ResendProvider(migrated.resend_api_key.get_secret_value(), fake_resend.url)
    producer = Producer(isolated)
    # Two senders, as two worker processes would be.
    senders = [Sender(sessions, provider, Pacer(1000), producer, isolated) for _ in range(2)]
    batches = [CampaignBatch(campaign_id=campaign_id, batch_no=n) for n in (0, 1)]
    replays_before = fake_resend.replays
    await asyncio.gather(*(s.send_batch(b) for s in senders for b in batches))
    await senders[0].send_batch(batches[0])
    await provider.aclose()
    producer.close()

    per_recipient = Counter(m.to[0] for m in fake_resend.messages if m.to[0].endswith("@" + domain))
    assert len(per_recipient) == 150
    assert set(per_recipient.values()) == {1}
    message = fake_resend.messages_to(f"lead1@{domain}")[0]
    assert message.html and "Hi Lead 1," in message.html and message.text
    created = [
        r
        for r in fake_resend.requests
        if r.path == "/templates" and r.body["name"] == f"campaign {campaign_id}"
    ]
    emails = [
        email
        for r in fake_resend.requests
        if r.path == "/emails/batch" and (r.idempotency_key or "").startswith(str(campaign_id))
        for email in r.body or []
    ]
    assert emails and all(("template" in e) is templates for e in emails)
    assert all(("html" in e) is not templates for e in emails)
    assert len(created) == (1 if templates else 0)
    used = {e["template"]["id"] for e in emails if templates}

    async def deleted() -> bool:  # by the relay's next reconcile, the grace being 0 here
        return not set(fake_resend.templates) & used

    await eventually(deleted)
    assert fake_resend.replays >= replays_before
    async with sessions() as session:
        counts = await counters.sums(session, campaign_id)
        status = await session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    assert counts["sent"] == 150
    assert counts["pending"] == 0
    assert status == "sent"


async def test_a_campaign_left_in_the_outbox_is_published_by_the_relay(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A crash between commit and publish (or a broker outage) loses nothing."""
    headers = token(sponsor)
    await factories.add_leads(
        client, sponsor, headers, factories.leads(5, domain=f"{sponsor}.example")
    )
    from schemas.http import CampaignIn

    async with sessions.begin() as session:  # no unit of work: committed, never published
        owner = await sponsors.get(session, sponsor)
        campaign = await logic.create(session, owner, CampaignIn(**factories.campaign()))
        assert campaign.status == "queued"

    await _wait_sent(client, sponsor, str(campaign.id), headers)


async def test_a_campaign_that_is_a_large_share_of_deliveries_is_analyzed_for_its_batches(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Fresh statistics know the campaign, so each batch loads through the pending index."""
    headers = token(sponsor)
    draft = await factories.draft(client, sponsor, headers)
    campaign_id = uuid.UUID(draft["id"])
    async with sessions.begin() as session:
        existing = await session.scalar(select(func.count()).select_from(CampaignDelivery))
        added = max(existing or 0, 5000)  # half of the table, or more
        await session.execute(
            text(
                "INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no) "
                "SELECT :id, n, 'r' || n || '@example.com', n / 100 "
                "FROM generate_series(1, :added) AS n"
            ),
            {"id": campaign_id, "added": added},
        )
    async with sessions.begin() as session:
        assert await repository.refresh_delivery_statistics(session, added)
        assert not await repository.refresh_delivery_statistics(session, 0)
        plan = "\n".join(
            await session.scalars(
                text(f"EXPLAIN {sending_repository._LOAD_BATCH.text}"),
                {"campaign_id": campaign_id, "batch_no": 7},
            )
        )
        # The table is partitioned: each partition has its own copy of the index.
        pending_indexes = set(
            await session.scalars(
                text("SELECT relid::regclass::text FROM pg_partition_tree('ix_deliveries_pending')")
            )
        )
    assert any(f" {name} " in plan for name in pending_indexes), plan


async def test_releasing_the_next_batch_reads_the_index_once_however_many_batches_are_left(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Every handled batch releases the next one, so its cost must not grow with the campaign."""
    draft = await factories.draft(client, sponsor, token(sponsor))
    campaign_id = uuid.UUID(draft["id"])
    entries_read = text(
        "SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index "
        "WHERE indrelid IN (SELECT relid FROM pg_partition_tree('campaign_deliveries'))"
    )
    async with sessions() as session:  # rolled back: no worker ever sees this campaign
        await session.execute(
            text(
                "INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no) "
                "SELECT :id, n, 'r' || n || '@example.com', n FROM generate_series(0, 19999) AS n"
            ),
            {"id": campaign_id},
        )
        # The table is partitioned: PostgreSQL reads each partition's index in order
        # when it knows the campaign is large (planning analyzes a large campaign), and
        # may sort a small one's rows instead, which costs little for a small one.
        await session.execute(text("ANALYZE campaign_deliveries"))
        await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(status="sending", batch_count=20000, enqueue_cursor=7)
        )
        before = await session.scalar(entries_read)
        # The statement runs inside this test's transaction, to be measured and rolled back.
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        driver = db.Driver(connection, cast(db.DriverConnection, raw))
        outcome = await sending_repository.record_batch_outcome(driver, campaign_id, 7, [], [])
        read = await session.scalar(entries_read) - before
        cursor = await session.scalar(
            select(Campaign.enqueue_cursor).where(Campaign.id == campaign_id)
        )
        released = await session.scalar(
            text("SELECT key FROM outbox WHERE key LIKE :k"), {"k": f"{campaign_id}:%"}
        )
        await session.rollback()
    assert outcome.released and released == f"{campaign_id}:8" and cursor == 8
    assert read == 1  # the next batch's first row, not one row per batch left


async def test_with_resend_templates_off_a_sender_decides_on_whole_bodies(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    fake_resend: FakeResend,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
) -> None:
    draft = await factories.draft(client, sponsor, token(sponsor))
    campaign_id = uuid.UUID(draft["id"])
    async with sessions.begin() as session:  # sending, with nothing to send
        await session.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(status="sending")
        )
    from worker.providers.resend import ResendProvider
    from worker.ratelimit import Pacer

    assert migrated.resend_api_key is not None
    provider = ResendProvider(migrated.resend_api_key.get_secret_value(), fake_resend.url)
    producer = Producer(migrated)
    try:
        off = migrated.model_copy(update={"resend_templates": False})
        sender = Sender(sessions, provider, Pacer(1000), producer, off)
        context = await sender.batches.contexts.get(campaign_id)
    finally:
        await provider.aclose()
        producer.close()

    assert context is not None and context.template is not None  # it could have been one
    assert context.template_id is None
    async with sessions() as session:
        decided = await session.scalar(
            select(Campaign.provider_template_id).where(Campaign.id == campaign_id)
        )
    assert decided == ""
    name = f"campaign {campaign_id}"
    assert not any(
        r.path == "/templates" and r.status == 200 and r.body["name"] == name
        for r in fake_resend.requests
    )
