"""The fast lane under load: lead event on ``leads.v1`` → provider request, while a campaign sends.

A campaign of ``BENCH_LATENCY_CAMPAIGN`` recipients (default 50,000) sends
through a planner, a relay and ``BENCH_SENDERS`` sender processes (default 1),
paced at ``BENCH_PROVIDER_RATE`` requests/s (default 100, 100 recipients a
request), beside a trigger and a message-sender process. Once it is sending,
``BENCH_LATENCY_EVENTS`` hot-lead events (default 100) are produced, one every
``1 / BENCH_LATENCY_EVENTS_PER_SECOND`` s (default 5/s); the starter rule
alerts the team and thanks each lead (two messages an event: keep them under
the messages' share of the rate, or they queue behind each other), and the
fake Resend (its own process) records when each thank-you arrived. Figures:
p50/p99/max of event → provider request, and the campaign's
recipients/s before the events and while they are sent (the campaign should slow
by no more than ``MESSAGES_RATE_SHARE``).

The issue's target: p50 ≤ 200 ms and p99 ≤ 1 s while a 1,000,000-recipient
campaign sends.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text

from schemas.events import TOPIC_LEADS
from schemas.http import CampaignIn
from service import outbox
from service.campaigns import logic
from service.db import create_engine, session_factory
from service.kafka import Producer
from service.settings import Settings
from service.sponsors import repository as sponsors
from tests.bench._messages import SPONSOR, Bench, bench_stack, fake_messages, percentile

CAMPAIGN = int(os.environ.get("BENCH_LATENCY_CAMPAIGN", "50000"))
EVENTS = int(os.environ.get("BENCH_LATENCY_EVENTS", "100"))
EVENTS_PER_SECOND = float(os.environ.get("BENCH_LATENCY_EVENTS_PER_SECOND", "5"))
RATE = float(os.environ.get("BENCH_PROVIDER_RATE", "100"))
SENDERS = int(os.environ.get("BENCH_SENDERS", "1"))
CAMPAIGN_DOMAIN = "campaign.example"


async def _campaign(settings: Settings) -> None:
    """The campaign's leads (never hot, so no rule fires for them), queued."""
    engine = create_engine(settings)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO leads (sponsor_id, email, name) SELECT :s, "
                "'c' || n || '@campaign.example', 'Lead ' || n FROM generate_series(1, :n) AS n"
            ),
            {"n": CAMPAIGN, "s": SPONSOR},
        )
    producer = Producer(settings)
    sessions = session_factory(engine)
    async with outbox.unit_of_work(sessions, producer) as work, work.transaction() as session:
        sponsor = await sponsors.get(session, SPONSOR)
        body = CampaignIn(name="bench", subject="Hello {{ name }}", message_body="Hi {{ name }}")
        await logic.create(session, sponsor, body)
    await asyncio.to_thread(producer.close)
    await engine.dispose()


async def _sent(settings: Settings) -> int:
    engine = create_engine(settings)
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM campaign_deliveries WHERE status = 'sent'")
        )
    await engine.dispose()
    return int(count or 0)


async def _events(settings: Settings) -> dict[str, float]:
    """Produce the hot leads one by one at the set pace; when each was produced."""
    producer = Producer(settings)
    produced: dict[str, float] = {}
    try:
        for n in range(EVENTS):
            email = f"hot{n}-{uuid.uuid4().hex[:6]}@lead.example"
            event = {
                "id": uuid.uuid4().hex,
                "type": "lead.upserted",
                "sponsor_id": SPONSOR,
                "email": email,
                "first_name": "Ada",
                "intent_level": "hot",
                "updated_at": datetime.now(UTC).isoformat(),
            }
            produced[email] = time.time()
            await producer.send([(TOPIC_LEADS, f"{SPONSOR}:{email}", orjson.dumps(event))])
            await asyncio.sleep(1 / EVENTS_PER_SECOND)
    finally:
        await asyncio.to_thread(producer.close)
    return produced


async def _queued_at(settings: Settings, emails: list[str]) -> dict[str, float]:
    """When the trigger wrote each lead's thank-you (the message row)."""
    engine = create_engine(settings)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT to_email, extract(epoch FROM created_at) FROM messages "
                "WHERE to_email = ANY(CAST(:emails AS text[]))"
            ),
            {"emails": emails},
        )
        queued = {email: float(at) for email, at in rows.all()}
    await engine.dispose()
    return queued


def _campaign_rate(arrivals: list[float], start: float, end: float) -> float:
    """Campaign recipients/s that reached the provider in [start, end)."""
    return sum(1 for t in arrivals if start <= t < end) / max(end - start, 1e-9)


def _wait(bench: Bench, predicate: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark's stack did not get there in time")
        time.sleep(0.2)


def main() -> dict[str, Any]:
    with bench_stack("messages-latency", rate_per_second=RATE) as bench:
        for role in ("planner", "relay", "trigger", "message-sender", "timers"):
            bench.worker(role)
        for _ in range(SENDERS):
            bench.worker("sender")
        asyncio.run(_campaign(bench.settings))
        # Sending for a few seconds: every group has joined and the pace is steady.
        _wait(bench, lambda: asyncio.run(_sent(bench.settings)) >= min(CAMPAIGN // 5, 5000), 600)
        before_start = time.time()
        time.sleep(5)
        events_start = time.time()
        produced = asyncio.run(_events(bench.settings))
        events_end = time.time()
        _wait(bench, lambda: len(fake_messages(bench, to=next(iter(produced)))) > 0, 60)
        deadline = time.monotonic() + 120
        arrived: dict[str, float] = {}
        while len(arrived) < len(produced) and time.monotonic() < deadline:
            arrived = {
                m["to"][0]: m["created_at"]
                for m in fake_messages(bench)
                if m["to"] and m["to"][0] in produced
            }
            time.sleep(1)
        latencies = [arrived[email] - at for email, at in produced.items() if email in arrived]
        queued = asyncio.run(_queued_at(bench.settings, list(arrived)))
        to_queue = [queued[email] - produced[email] for email in arrived if email in queued]
        to_provider = [arrived[email] - queued[email] for email in arrived if email in queued]
        campaign = [
            m["created_at"] for m in fake_messages(bench) if m["to"][0].endswith(CAMPAIGN_DOMAIN)
        ]
        share = bench.settings.messages_rate_share
        alone = _campaign_rate(campaign, before_start, events_start)
        # A campaign that ends while the events come is timed only while it sent.
        beside = _campaign_rate(campaign, events_start, min(events_end, max(campaign)))
        return {
            "campaign_recipients": CAMPAIGN,
            "provider_rate_per_second": RATE,
            "messages_rate_share": share,
            "events": EVENTS,
            "events_per_second": EVENTS_PER_SECOND,
            "messages_arrived": len(latencies),
            "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "latency_max_ms": round(max(latencies) * 1000, 1),
            # Roughly the two halves: event → the trigger's transaction that wrote the
            # row (``created_at`` is its start), then the rest of that transaction, the
            # outbox, messages.v1 and the message-sender (→ provider request).
            "event_to_queued_p50_ms": round(percentile(to_queue, 0.5) * 1000, 1),
            "queued_to_provider_p50_ms": round(percentile(to_provider, 0.5) * 1000, 1),
            "campaign_per_second_alone": round(alone, 1),
            "campaign_per_second_beside_messages": round(beside, 1),
            "campaign_slowdown_share": round(1 - beside / alone, 3) if alone else 0.0,
            "campaign_still_sending_after_events": max(campaign) > events_end,
            "target_p50_ms": 200,
            "target_p99_ms": 1000,
        }
