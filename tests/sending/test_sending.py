"""Sending lifecycle on the real stack: schedules, pause/resume/cancel, failures, caps.

Fairness between campaigns is shown in ``test_fairness.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import confluent_kafka
import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import TOPIC_CAMPAIGN_BATCHES_DLQ, CampaignBatch
from service import db
from service.campaigns import repository, sending_repository
from service.kafka import make_consumer
from service.models import CampaignDelivery, Suppression
from service.settings import Settings
from service.stats import counters as stats_counters
from tests import factories
from tests.conftest import SponsorApi, TokenFactory, eventually
from tests.fakes.resend_server import FakeResend

pytestmark = pytest.mark.usefixtures("workers")


class Api(SponsorApi):
    """The sponsor's view of one test: create, act, read stats."""

    def __init__(self, client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> None:
        super().__init__(client, sponsor, token)
        self.domain = f"{sponsor}.example"

    def url(self, path: str = "") -> str:
        return super().url(f"/campaigns{path}")

    async def leads(self, count: int, **fields: Any) -> None:
        await factories.add_leads(
            self.client,
            self.sponsor,
            self.headers,
            factories.leads(count, domain=self.domain, **fields),
        )

    async def create(self, **overrides: Any) -> dict[str, Any]:
        response = await self.client.post(
            self.url(), headers=self.headers, json=factories.campaign(**overrides)
        )
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    async def post(self, campaign_id: str, action: str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(
            self.url(f"/{campaign_id}/{action}"), headers=self.headers, **kwargs
        )

    async def stats(self, campaign_id: str) -> dict[str, Any]:
        response = await self.client.get(self.url(f"/{campaign_id}/stats"), headers=self.headers)
        result: dict[str, Any] = response.json()
        return result

    async def campaign(self, campaign_id: str) -> dict[str, Any]:
        result: dict[str, Any] = (
            await self.client.get(self.url(f"/{campaign_id}"), headers=self.headers)
        ).json()
        return result

    async def wait_status(
        self, campaign_id: str, status: str, within: float = 60
    ) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            stats = await self.stats(campaign_id)
            return stats if stats["status"] == status else None

        return await eventually(reached, within=within)

    def per_recipient(self, fake: FakeResend) -> Counter[str]:
        return Counter(m.to[0] for m in fake.messages if m.to[0].endswith("@" + self.domain))


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


async def test_a_scheduled_campaign_waits_then_sends(api: Api, fake: FakeResend) -> None:
    await api.leads(20)
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    created = await api.create(send_at=send_at.isoformat())
    assert created["status"] == "scheduled"
    assert datetime.fromisoformat(created["send_at"]) == send_at.replace(
        microsecond=send_at.microsecond
    )
    await asyncio.sleep(1)
    assert (await api.stats(created["id"]))["status"] == "scheduled"
    assert not api.per_recipient(fake)
    stats = await api.wait_status(created["id"], "sent", within=30)
    assert stats["sent"] == 20
    assert set(api.per_recipient(fake).values()) == {1}


async def test_a_schedule_without_a_timezone_is_422(api: Api) -> None:
    response = await api.client.post(
        api.url(), headers=api.headers, json=factories.campaign(send_at="2030-01-01T10:00:00")
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "send_at"


async def test_a_draft_can_be_scheduled(api: Api) -> None:
    draft = await api.create(draft=True)
    send_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    response = await api.post(draft["id"], "schedule", json={"send_at": send_at})
    assert response.status_code == 200
    assert response.json()["status"] == "scheduled"


async def test_pause_stops_sending_and_resume_finishes_exactly_once(
    api: Api, fake: FakeResend
) -> None:
    await api.leads(2000)
    fake.set_latency(1.0)
    created = await api.create()
    await api.wait_status(created["id"], "sending")
    paused = await api.post(created["id"], "pause")
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"

    async def settled() -> list[int] | None:
        before = (await api.stats(created["id"]))["sent"]
        await asyncio.sleep(2.5)  # batches in flight finish, nothing new starts
        after = (await api.stats(created["id"]))["sent"]
        return [after] if after == before else None

    (sent_while_paused,) = await eventually(settled, within=30)
    assert sent_while_paused < 2000
    fake.set_latency(0)
    assert (await api.post(created["id"], "resume")).status_code == 202
    stats = await api.wait_status(created["id"], "sent")
    assert stats["sent"] == 2000
    assert stats["pending"] == 0
    per_recipient = api.per_recipient(fake)
    assert len(per_recipient) == 2000
    assert set(per_recipient.values()) == {1}


async def test_cancel_keeps_sent_rows_and_cancels_the_rest(api: Api, fake: FakeResend) -> None:
    await api.leads(2000)
    fake.set_latency(1.0)
    created = await api.create()
    await api.wait_status(created["id"], "sending")

    async def template_made() -> bool:
        return _templates_created(fake, created["id"]) == 1

    await eventually(template_made)
    cancelled = await api.post(created["id"], "cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    fake.set_latency(0)
    await asyncio.sleep(3)
    stats = await api.stats(created["id"])
    assert stats["pending"] == 0
    assert stats["cancelled"] > 0
    assert stats["sent"] + stats["cancelled"] == 2000
    assert sum(api.per_recipient(fake).values()) == stats["sent"]
    again = await api.post(created["id"], "cancel")
    assert again.status_code == 409
    # The cancelled campaign's template is deleted too, by the reconciler.
    await eventually(lambda: _no_template_left(fake, created["id"]))


async def _deliveries(
    session: AsyncSession, sponsor: str, campaign_id: uuid.UUID, batch_no: str
) -> list[int]:
    """Pending rows for every lead of ``sponsor``, as the planner writes them; their ids."""
    rows = await session.scalars(
        text(
            "INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no) "
            f"SELECT :c, id, email, {batch_no} FROM leads WHERE sponsor_id = :s "
            "ORDER BY id RETURNING id"
        ),
        {"c": campaign_id, "s": sponsor},
    )
    return list(rows)


async def test_a_batch_records_rows_cancelled_while_with_the_provider_as_sent_once(
    api: Api, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.leads(3)
    campaign_id = uuid.UUID((await api.create(draft=True))["id"])
    async with sessions.begin() as session:
        # What the planner would have written (three pending rows of batch 0, counted),
        # then a cancel that reached one row while the batch was with the provider.
        ids = await _deliveries(session, api.sponsor, campaign_id, "0")
        await session.execute(
            text("INSERT INTO campaign_stats (campaign_id, shard, pending) VALUES (:c, 0, 3)"),
            {"c": campaign_id},
        )
        await session.execute(
            text("UPDATE campaign_deliveries SET status = 'cancelled' WHERE id = :id"),
            {"id": ids[0]},
        )
        await stats_counters.bump(session, {(campaign_id, 0): {"pending": -1, "cancelled": 1}})

    recorded = []
    for _ in range(2):  # the batch's message delivered twice
        async with db.driver(sessions) as driver:
            outcome = await sending_repository.record_batch_outcome(
                driver, campaign_id, 0, [(i, f"message-{i}") for i in ids], []
            )
        recorded.append((outcome.sent, outcome.failed))

    assert recorded == [(3, 0), (0, 0)]
    async with sessions() as session:
        counters = await stats_counters.sums(session, campaign_id)
        statuses = await session.scalars(
            select(CampaignDelivery.status).where(CampaignDelivery.campaign_id == campaign_id)
        )
        assert set(statuses) == {"sent"}
    assert (counters["sent"], counters["pending"], counters["cancelled"]) == (3, 0, 0)


async def test_recording_a_batch_counts_its_rows_and_returns_the_next_pending_batch(
    api: Api, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.leads(5)
    campaign_id = uuid.UUID((await api.create(draft=True))["id"])
    async with sessions.begin() as session:
        # Five batches of one row; 0 and 1 are out, batch 2's row was suppressed.
        ids = await _deliveries(
            session, api.sponsor, campaign_id, "row_number() OVER (ORDER BY id) - 1"
        )
        await session.execute(
            text("UPDATE campaign_deliveries SET status = 'suppressed' WHERE id = :id"),
            {"id": ids[2]},
        )
        for batch_no in (0, 1, 3, 4):
            await stats_counters.bump(
                session, {(campaign_id, stats_counters.shard_of(batch_no)): {"pending": 1}}
            )
        # Sending, with recent progress: the reconciler leaves it alone.
        await session.execute(
            text(
                "UPDATE campaigns SET status = 'sending', batch_count = 5, enqueue_cursor = 1, "
                "send_round = 0, last_progress_at = now() WHERE id = :c"
            ),
            {"c": campaign_id},
        )

    async def record(
        batch_no: int, sent: list[tuple[int, str]], failed: list[tuple[int, str]]
    ) -> sending_repository.BatchOutcome:
        async with db.driver(sessions) as driver:
            return await sending_repository.record_batch_outcome(
                driver, campaign_id, batch_no, sent, failed
            )

    first = await record(0, [(ids[0], "message-0")], [])
    second = await record(1, [], [(ids[1], "validation_error: no")])
    replayed = await record(0, [(ids[0], "message-0")], [])

    assert (first.sent, first.failed, first.released) == (1, 0, True)
    assert (second.sent, second.failed, second.released) == (0, 1, True)
    assert (replayed.sent, replayed.failed, replayed.released) == (0, 0, False)
    async with sessions.begin() as session:
        counters = await stats_counters.sums(session, campaign_id)
        cursor = await session.scalar(
            text("SELECT enqueue_cursor FROM campaigns WHERE id = :c"), {"c": campaign_id}
        )
        # Taken back before the relay or the reconciler sends the rest for real.
        released = (
            await session.execute(
                text("DELETE FROM outbox WHERE key LIKE :k RETURNING key, payload"),
                {"k": f"{campaign_id}:%"},
            )
        ).all()
        await repository.auto_pause(session, campaign_id, "test")
    assert (counters["sent"], counters["failed"], counters["pending"]) == (1, 1, 2)
    assert cursor == 4
    # Committed, for the caller's unit of work (or the relay) to publish.
    assert sorted((key, payload) for key, payload in released) == [
        (f"{campaign_id}:3", CampaignBatch(campaign_id=campaign_id, batch_no=3).to_bytes()),
        (f"{campaign_id}:4", CampaignBatch(campaign_id=campaign_id, batch_no=4).to_bytes()),
    ]


def _batched_emails(fake: FakeResend, campaign_id: str) -> list[dict[str, Any]]:
    """Every email the campaign's accepted batch requests carried, as sent."""
    return [
        email
        for r in fake.requests
        if r.path == "/emails/batch"
        and r.status == 200
        and (r.idempotency_key or "").startswith(campaign_id)
        for email in r.body
    ]


async def _no_template_left(fake: FakeResend, campaign_id: str) -> bool:
    return all(t.name != f"campaign {campaign_id}" for t in fake.templates.values())


def _templates_created(fake: FakeResend, campaign_id: str) -> int:
    name = f"campaign {campaign_id}"
    return sum(
        r.path == "/templates" and r.status == 200 and r.body["name"] == name for r in fake.requests
    )


async def test_a_campaign_body_goes_to_resend_once_as_a_template(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.leads(150, company="R&D <Labs>")
    created = await api.create()
    await api.wait_status(created["id"], "sent")

    emails = _batched_emails(fake, created["id"])
    assert len(emails) == 150
    assert all("template" in e and "html" not in e and "text" not in e for e in emails)
    assert _templates_created(fake, created["id"]) == 1
    assert len({e["template"]["id"] for e in emails}) == 1
    # Filled in by Resend, each message is the one the service renders.
    (message,) = fake.messages_to(f"lead1@{api.domain}")
    assert message.html and message.text and message.subject == "Hello Lead 1"
    assert ">Hi Lead 1,</p>" in message.html
    assert "welcome from R&amp;D &lt;Labs&gt;." in message.html
    assert "welcome from R&D <Labs>." in message.text
    unsubscribe = message.headers["List-Unsubscribe"].strip("<>")
    assert f'href="{unsubscribe}"' in message.html and unsubscribe in message.text

    # Sent: the reconciler deletes the template, and a next round would decide anew.
    await eventually(lambda: _no_template_left(fake, created["id"]))
    async with sessions() as session:
        decided = await session.scalar(
            text("SELECT provider_template_id FROM campaigns WHERE id = :id"),
            {"id": created["id"]},
        )
    assert decided is None


@pytest.mark.parametrize(
    ("content", "template_fault"),
    [
        ({"message_body": "{% set who = name %}Hi {{ who }},"}, False),
        ({}, True),
    ],
    ids=["needs_jinja_per_recipient", "template_refused"],
)
async def test_a_round_that_cannot_use_a_template_sends_whole_bodies(
    api: Api, fake: FakeResend, content: dict[str, str], template_fault: bool
) -> None:
    await api.leads(30)
    if template_fault:
        fake.fail_next(1, status=422, path="/templates")
    created = await api.create(**content)
    stats = await api.wait_status(created["id"], "sent")

    assert stats["sent"] == 30
    emails = _batched_emails(fake, created["id"])
    assert len(emails) == 30
    assert all("html" in e and "template" not in e for e in emails)
    assert _templates_created(fake, created["id"]) == 0
    refused = [r for r in fake.requests if r.path == "/templates" and r.status == 422]
    assert len(refused) == int(template_fault)
    (message,) = fake.messages_to(f"lead1@{api.domain}")
    assert message.html and "Hi Lead 1," in message.html


async def test_transient_errors_are_retried_with_the_same_idempotency_key(
    api: Api, fake: FakeResend
) -> None:
    await api.leads(50)
    fake.fail_next(1, status=500, path="/emails/batch")
    created = await api.create()
    stats = await api.wait_status(created["id"], "sent")
    assert stats["sent"] == 50
    assert set(api.per_recipient(fake).values()) == {1}
    keys = [
        r.idempotency_key
        for r in fake.requests
        if r.idempotency_key and r.idempotency_key.startswith(created["id"])
    ]
    assert len(keys) == 2
    assert len(set(keys)) == 1


async def test_a_rejected_batch_fails_its_rows_and_retry_failed_redrives_them(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.leads(30)
    fake.fail_next(1, status=422, path="/emails/batch")
    created = await api.create()
    stats = await api.wait_status(created["id"], "sent")
    assert (stats["sent"], stats["failed"]) == (0, 30)
    rows = (
        await api.client.get(
            api.url(f"/{created['id']}/deliveries"),
            headers=api.headers,
            params={"status": "failed"},
        )
    ).json()["items"]
    assert len(rows) == 30
    assert all(row["last_error"] for row in rows)

    async with sessions.begin() as session:
        session.add(
            Suppression(sponsor_id=api.sponsor, email=f"lead0@{api.domain}", reason="manual")
        )
    response = await api.post(created["id"], "retry-failed")
    assert response.status_code == 202
    assert response.json()["retried"] == 29
    assert response.json()["campaign"]["send_round"] == 1
    stats = await api.wait_status(created["id"], "sent")
    assert (stats["sent"], stats["failed"]) == (29, 1)
    assert f"lead0@{api.domain}" not in api.per_recipient(fake)
    assert set(api.per_recipient(fake).values()) == {1}
    await eventually(lambda: _no_template_left(fake, created["id"]))


async def test_a_quota_error_pauses_the_campaign_and_resume_continues(
    api: Api, fake: FakeResend
) -> None:
    await api.leads(40)
    fake.fail_next(1, status=429, error_name="daily_quota_exceeded", path="/emails/batch")
    created = await api.create()
    paused = await api.wait_status(created["id"], "paused")
    assert paused["sent"] == 0
    assert (await api.campaign(created["id"]))["status_reason"] == "daily_quota_exceeded"
    assert (await api.post(created["id"], "resume")).status_code == 202
    stats = await api.wait_status(created["id"], "sent")
    assert stats["sent"] == 40


async def test_a_campaign_that_keeps_failing_pauses_itself(
    api: Api, fake: FakeResend, migrated: Settings
) -> None:
    # More batches than a sender has in flight: rows are still pending when the guard
    # trips (a campaign that already finished is not paused, see docs/lifecycle.md).
    await api.leads(migrated.send_failure_pause_min + 10 * migrated.provider_batch_size)
    fake.fail_for(60, status=422)
    created = await api.create()
    await api.wait_status(created["id"], "paused")
    campaign = await api.campaign(created["id"])
    assert campaign["status_reason"].startswith("failure_rate")


async def test_a_batch_that_keeps_failing_goes_to_the_dead_letter_topic(
    api: Api, fake: FakeResend, migrated: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.leads(10)
    fake.fail_for(60, status=503)
    created = await api.create()
    stats = await api.wait_status(created["id"], "sent", within=60)
    assert stats["failed"] == 10
    async with sessions() as session:
        errors = set(
            (
                await session.scalars(
                    select(CampaignDelivery.last_error).where(
                        CampaignDelivery.campaign_id == uuid.UUID(created["id"])
                    )
                )
            ).all()
        )
    assert len(errors) == 1
    assert "503" in str(errors) or "unavailable" in str(errors).lower()

    consumer = make_consumer(migrated, f"dlq-reader-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([migrated.topic(TOPIC_CAMPAIGN_BATCHES_DLQ)])

    def dead_letters() -> list[CampaignBatch]:
        found: list[CampaignBatch] = []
        for _ in range(20):
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    event = CampaignBatch.model_validate_json(message.value() or b"")
                    if str(event.campaign_id) == created["id"]:
                        found.append(event)
            if found:
                return found
        return found

    try:
        letters = await asyncio.to_thread(dead_letters)
    finally:
        consumer.close()
    assert letters
    assert letters[0].attempt == migrated.send_retry_topic_attempts
    assert letters[0].last_error


async def test_the_hourly_cap_holds_a_sponsor_back(
    api: Api, fake: FakeResend, admin: dict[str, str]
) -> None:
    await api.client.put(
        f"/api/v1/sponsors/{api.sponsor}",
        headers=admin,
        json={
            "name": "Capped",
            "from_email": "a@capped.example",
            "postal_address": "1 Road",
            "hourly_send_cap": 150,
        },
    )
    await api.leads(300)
    created = await api.create()
    await eventually(lambda: _sent_at_least(api, created["id"], 100), within=30)
    await asyncio.sleep(2)
    stats = await api.stats(created["id"])
    assert stats["status"] == "sending"
    assert stats["sent"] == 100
    assert stats["pending"] == 200


async def _sent_at_least(api: Api, campaign_id: str, count: int) -> bool:
    return bool((await api.stats(campaign_id))["sent"] >= count)


def test_consumers_use_the_classic_group_protocol(migrated: Settings) -> None:
    """The local broker ignores KIP-848; production clusters must not be switched to it silently."""
    consumer = make_consumer(migrated, "probe")
    assert isinstance(consumer, confluent_kafka.Consumer)
    consumer.close()
