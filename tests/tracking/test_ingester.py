"""The ingester: idempotent, order-independent, counters equal a recount from raw events."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import TOPIC_DELIVERY_EVENTS, TOPIC_PROVIDER_EVENTS
from schemas.tracking import ProviderEvent, TrackingEvent
from service.kafka import Producer, make_consumer
from service.settings import Settings
from tests import factories
from tests.conftest import eventually
from tests.dead_letters import dead_letter
from tests.factories import SentCampaign, sent_campaign
from tests.tracking.test_webhooks import about, example, post
from worker.ingester import Ingester

Event = TrackingEvent | ProviderEvent


@pytest.fixture
async def ingester(sessions: async_sessionmaker[AsyncSession], migrated: Settings) -> Any:
    producer = Producer(migrated)
    yield Ingester(sessions, producer, migrated)
    producer.close()


def _id() -> str:
    return uuid.uuid4().hex


def provider(
    kind: str, campaign: SentCampaign, i: int, at: datetime, **fields: Any
) -> ProviderEvent:
    return ProviderEvent(
        type=kind,
        event_id=f"resend:{_id()}",
        provider_type=f"email.{kind}",
        email_id=campaign.provider_ids[i],
        occurred_at=at,
        **({"tags": campaign.tags(i)} | fields),
    )


def own(kind: str, campaign: SentCampaign, i: int, at: datetime, **fields: Any) -> TrackingEvent:
    return TrackingEvent(
        type=kind,
        event_id=_id(),
        delivery_id=campaign.delivery_ids[i],
        occurred_at=at,
        **fields,
    )


async def figures(
    sessions: async_sessionmaker[AsyncSession], campaign_id: uuid.UUID
) -> dict[str, int]:
    names = (
        "delivered", "bounced", "complained", "failed", "suppressed", "opened", "opens",
        "human_opened", "clicked", "clicks", "human_clicked",
    )  # fmt: skip
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT "
                    + ", ".join(f"coalesce(sum({n}), 0)" for n in names)
                    + " FROM campaign_stats WHERE campaign_id = :c"
                ),
                {"c": campaign_id},
            )
        ).one()
    return dict(zip(names, (int(v) for v in row), strict=True))


async def recount(
    sessions: async_sessionmaker[AsyncSession], campaign_id: uuid.UUID
) -> dict[str, int]:
    """The same figures computed from the raw event log alone."""
    async with sessions() as session:
        row = (
            await session.execute(
                text("""
SELECT
  count(DISTINCT delivery_id) FILTER (WHERE type = 'delivered'),
  count(DISTINCT delivery_id) FILTER (
      WHERE type = 'bounced' AND payload->>'bounce_type' = 'Permanent'),
  count(DISTINCT delivery_id) FILTER (WHERE type = 'complained'),
  count(DISTINCT delivery_id) FILTER (WHERE type IN ('open', 'opened')),
  count(*) FILTER (WHERE type = 'open'),
  count(DISTINCT delivery_id) FILTER (WHERE type = 'open' AND NOT is_machine),
  count(DISTINCT delivery_id) FILTER (WHERE type IN ('click', 'clicked')),
  count(*) FILTER (WHERE type = 'click'),
  count(DISTINCT delivery_id) FILTER (WHERE type = 'click' AND NOT is_machine)
FROM delivery_events WHERE campaign_id = :c
"""),
                {"c": campaign_id},
            )
        ).one()
        final: dict[str, int] = dict(
            (
                await session.execute(
                    text(
                        "SELECT status, count(*) FROM campaign_deliveries "
                        "WHERE campaign_id = :c GROUP BY status"
                    ),
                    {"c": campaign_id},
                )
            ).all()
        )
    names = (
        "delivered", "bounced", "complained", "opened", "opens", "human_opened", "clicked",
        "clicks", "human_clicked",
    )  # fmt: skip
    counted = dict(zip(names, (int(v) for v in row), strict=True))
    counted["failed"] = int(final.get("failed", 0))
    counted["suppressed"] = int(final.get("suppressed", 0))
    return counted


async def test_a_randomized_event_storm_leaves_counters_equal_to_a_recount(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    rng = random.Random(6)
    campaign = await sent_campaign(sessions, sponsor, 60)
    base = datetime.now(UTC) - timedelta(minutes=30)
    events: list[Event] = []
    for i in range(60):
        at = base + timedelta(seconds=rng.randint(0, 600))
        if rng.random() < 0.9:
            events.append(provider("delivered", campaign, i, at))
        outcome = rng.random()
        if outcome < 0.08:
            events.append(provider("bounced", campaign, i, at, bounce_type="Permanent"))
        elif outcome < 0.14:
            events.append(provider("bounced", campaign, i, at, bounce_type="Transient"))
        elif outcome < 0.18:
            events.append(provider("complained", campaign, i, at))
        elif outcome < 0.2:
            events.append(provider("failed", campaign, i, at))
        for _ in range(rng.randint(0, 4)):
            events.append(
                own(
                    "open",
                    campaign,
                    i,
                    at + timedelta(minutes=1),
                    machine=rng.choice([None, "apple_mpp"]),
                )
            )
        for _ in range(rng.randint(0, 2)):
            events.append(
                own(
                    "click",
                    campaign,
                    i,
                    at + timedelta(minutes=2),
                    position=rng.choice([0, 1]),
                    machine=rng.choice([None, None, "head_request"]),
                )
            )
        if rng.random() < 0.2:
            events.append(provider("opened", campaign, i, at + timedelta(minutes=3)))
    # Every event at least once, a third of them twice, in any order, in uneven batches.
    stream = events + rng.sample(events, len(events) // 3)
    rng.shuffle(stream)
    while stream:
        size = rng.randint(1, 80)
        await ingester.handle_events(stream[:size])
        stream = stream[size:]

    assert await figures(sessions, campaign.id) == await recount(sessions, campaign.id)
    counted = await figures(sessions, campaign.id)
    assert counted["opens"] == sum(1 for e in events if e.type == "open")
    async with sessions() as session:
        link_clicks = await session.scalar(
            text("SELECT sum(clicks) FROM campaign_links WHERE campaign_id = :c"),
            {"c": campaign.id},
        )
    assert link_clicks == counted["clicks"]


async def test_an_open_before_delivered_ends_delivered_and_opened(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 1)
    now = datetime.now(UTC)
    await ingester.handle_events([own("open", campaign, 0, now)])
    await ingester.handle_events([provider("delivered", campaign, 0, now - timedelta(seconds=5))])
    await ingester.handle_events([provider("sent", campaign, 0, now - timedelta(seconds=9))])
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT status, delivered_at, first_opened_at FROM campaign_deliveries "
                    "WHERE id = :id"
                ),
                {"id": campaign.delivery_ids[0]},
            )
        ).one()
    assert row.status == "delivered"
    assert row.delivered_at < row.first_opened_at
    assert (await figures(sessions, campaign.id))["delivered"] == 1


async def test_a_transient_bounce_is_a_note_not_a_suppression(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 1)
    event = provider(
        "bounced", campaign, 0, datetime.now(UTC), bounce_type="Transient", detail="mailbox full"
    )
    await ingester.handle_events([event])
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT status, last_error FROM campaign_deliveries WHERE id = :id"),
                {"id": campaign.delivery_ids[0]},
            )
        ).one()
        suppressed = await session.scalar(
            text("SELECT count(*) FROM suppressions WHERE sponsor_id = :s"), {"s": sponsor}
        )
    assert row.status == "sent" and "mailbox full" in row.last_error
    assert suppressed == 0


async def test_a_provider_failure_after_sending_moves_the_row_from_sent_to_failed(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    """So retry-failed, which counts the row as sent again, never counts it twice."""
    campaign = await sent_campaign(sessions, sponsor, 2)
    await ingester.handle_events([provider("failed", campaign, 0, datetime.now(UTC))])
    await ingester.handle_events([provider("failed", campaign, 0, datetime.now(UTC))])
    async with sessions() as session:
        sent, failed = (
            await session.execute(
                text("SELECT sum(sent), sum(failed) FROM campaign_stats WHERE campaign_id = :c"),
                {"c": campaign.id},
            )
        ).one()
    assert (sent, failed) == (1, 1)


async def test_an_address_the_provider_suppressed_is_suppressed_here_too(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 1)
    await ingester.handle_events([provider("suppressed", campaign, 0, datetime.now(UTC))])
    async with sessions() as session:
        reason = await session.scalar(
            text("SELECT reason FROM suppressions WHERE sponsor_id = :s AND email = :e"),
            {"s": sponsor, "e": campaign.emails[0]},
        )
    assert reason == "hard_bounce"


async def test_status_changes_are_published_to_delivery_events(
    ingester: Ingester,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    migrated: Settings,
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 1)
    await ingester.handle_events([provider("delivered", campaign, 0, datetime.now(UTC))])
    consumer = make_consumer(migrated, f"test-{_id()}")
    consumer.subscribe([migrated.topic(TOPIC_DELIVERY_EVENTS)])
    found = None
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while found is None and datetime.now(UTC) < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is not None:
                    continue
                payload = json.loads(message.value() or b"{}")
                if payload["delivery_id"] == campaign.delivery_ids[0]:
                    found = payload
    finally:
        consumer.close()
    assert found is not None
    assert (found["previous_status"], found["status"]) == ("sent", "delivered")
    assert found["campaign_id"] == str(campaign.id) and found["sponsor_id"] == sponsor


async def test_too_many_complaints_pause_the_sponsors_running_campaigns(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    done = await sent_campaign(sessions, sponsor, 300)
    running = await sent_campaign(sessions, sponsor, 5, status="sending")
    now = datetime.now(UTC)
    await ingester.handle_events([provider("complained", done, 0, now)])  # 1 of 305: 0.33 %
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT id, status, status_reason FROM campaigns WHERE sponsor_id = :s"),
                {"s": sponsor},
            )
        ).all()
    states = {row.id: (row.status, row.status_reason) for row in rows}
    assert states[done.id] == ("sent", None)
    status, reason = states[running.id]
    assert status == "paused" and "complaint rate" in reason


async def test_a_few_bounces_under_the_limit_pause_nothing(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    running = await sent_campaign(sessions, sponsor, 300, status="sending")
    now = datetime.now(UTC)
    await ingester.handle_events(
        [provider("bounced", running, i, now, bounce_type="Permanent") for i in range(3)]
    )  # 1 %, under the 2 % limit
    async with sessions() as session:
        status = await session.scalar(
            text("SELECT status FROM campaigns WHERE id = :c"), {"c": running.id}
        )
    assert status == "sending"


@pytest.mark.usefixtures("workers")
async def test_a_hard_bounce_suppresses_the_address_for_the_next_campaign(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    headers = token(sponsor)
    base = f"/api/v1/sponsors/{sponsor}/campaigns"
    await factories.add_leads(
        client, sponsor, headers, factories.leads(5, domain=f"{sponsor}.example")
    )

    async def sent(campaign_id: str) -> dict[str, Any] | None:
        stats = (await client.get(f"{base}/{campaign_id}/stats", headers=headers)).json()
        return stats if stats["status"] == "sent" else None

    first = (await client.post(base, headers=headers, json=factories.campaign())).json()
    await eventually(lambda: sent(first["id"]), within=90)
    async with sessions() as session:
        bounced = (
            await session.execute(
                text(
                    "SELECT id, recipient_email, provider_message_id FROM campaign_deliveries "
                    "WHERE campaign_id = :c ORDER BY id LIMIT 1"
                ),
                {"c": first["id"]},
            )
        ).one()
    tags = {"campaign_id": first["id"], "delivery_id": str(bounced.id)}
    body = example("bounced", bounced.provider_message_id, tags=tags)
    assert (await post(client, body)).status_code == 200

    async def suppressed() -> str | None:
        async with sessions() as session:
            reason: str | None = await session.scalar(
                text("SELECT reason FROM suppressions WHERE sponsor_id = :s AND email = :e"),
                {"s": sponsor, "e": bounced.recipient_email},
            )
        return reason

    assert await eventually(suppressed) == "hard_bounce"
    second = (await client.post(base, headers=headers, json=factories.campaign())).json()
    stats = await eventually(lambda: sent(second["id"]), within=90)
    assert stats["recipients"] == 4 and stats["sent"] == 4
    async with sessions() as session:
        skipped = await session.scalar(
            text(
                "SELECT count(*) FROM campaign_deliveries WHERE campaign_id = :c "
                "AND recipient_email = :e"
            ),
            {"c": second["id"], "e": bounced.recipient_email},
        )
    assert skipped == 0
    first_stats = (await client.get(f"{base}/{first['id']}/stats", headers=headers)).json()
    assert first_stats["bounced"] == 1 and first_stats["bounce_rate"] == 20.0


async def test_an_event_that_overtakes_the_sender_leaves_the_status_to_the_sender(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 1)
    target = campaign.delivery_ids[0]
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE campaign_deliveries SET status = 'pending', provider_message_id = NULL "
                "WHERE id = :id"
            ),
            {"id": target},
        )
    event = provider("delivered", campaign, 0, datetime.now(UTC))
    await ingester.handle_events([event])
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT status, delivered_at FROM campaign_deliveries WHERE id = :id"),
                {"id": target},
            )
        ).one()
    assert row.status == "pending" and row.delivered_at is not None
    assert (await figures(sessions, campaign.id))["delivered"] == 1


@pytest.mark.usefixtures("workers")
async def test_a_webhook_with_an_out_of_range_delivery_id_is_dead_lettered_and_the_next_counts(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    migrated: Settings,
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 1)
    poison_id = f"msg_{_id()}"
    tags = {"campaign_id": str(campaign.id), "delivery_id": "99999999999999999999"}
    poison = example("delivered", campaign.provider_ids[0], tags=tags)
    assert (await post(client, poison, poison_id)).status_code == 200
    assert (await post(client, example("delivered", **about(campaign, 0)))).status_code == 200

    async def delivered() -> bool:
        row = await factories.delivery(sessions, campaign.delivery_ids[0])
        return bool(row["status"] == "delivered")

    assert await eventually(delivered)
    value, headers = await dead_letter(migrated, poison_id)
    assert value is not None and b"99999999999999999999" in value
    assert headers["dead-letter.reason"] == "invalid_value"
    assert headers["dead-letter.group"] == "ingester"
    assert headers["dead-letter.topic"] == migrated.topic(TOPIC_PROVIDER_EVENTS)
    assert "int64" in headers["dead-letter.error"]


async def test_a_failure_for_the_providers_quota_pauses_its_campaign_at_once(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    """As Resend reports it (``email.failed``, ``failed.reason: reached_daily_quota``)."""
    running = await sent_campaign(sessions, sponsor, 300, status="sending")
    other = await sent_campaign(sessions, sponsor, 5, status="sending")
    reason = json.loads(example("failed"))["data"]["failed"]["reason"]
    await ingester.handle_events([provider("failed", running, 0, datetime.now(UTC), detail=reason)])
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT id, status, status_reason FROM campaigns WHERE sponsor_id = :s"),
                {"s": sponsor},
            )
        ).all()
    states = {row.id: (row.status, row.status_reason) for row in rows}
    assert states[running.id] == ("paused", f"provider quota: {reason}")
    assert states[other.id] == ("sending", None)


async def test_a_failure_for_another_reason_pauses_nothing(
    ingester: Ingester, sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    running = await sent_campaign(sessions, sponsor, 300, status="sending")
    await ingester.handle_events(
        [provider("failed", running, 0, datetime.now(UTC), detail="invalid_recipient")]
    )
    async with sessions() as session:
        status = await session.scalar(
            text("SELECT status FROM campaigns WHERE id = :c"), {"c": running.id}
        )
    assert status == "sending"
