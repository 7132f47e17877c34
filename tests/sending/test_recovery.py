"""Crash recovery on a stack of its own, with workers as real processes.

Every test here kills or restarts something in the middle of a campaign and
then checks the two promises: every recipient gets exactly one message (the
fake counts accepted messages; idempotency-key replays are counted apart), and
no row is left ``pending``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.devstack import DevStack
from schemas.http import CampaignIn
from service.campaigns import logic
from service.cli import migrate
from service.db import create_engine, session_factory
from service.kafka import create_topics
from service.settings import Settings, settings_from_env
from service.sponsors import repository as sponsors
from tests.fakes.resend_server import FakeResend

KEY = "re_recovery"


@dataclass
class Cluster:
    stack: DevStack
    fake: FakeResend
    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return settings_from_env(self.env)

    def start_worker(self, role: str | None = None, **overrides: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "service.cli", "worker"] + (["--role", role] if role else [])
        log = open(self.logs / f"worker-{len(self.workers)}-{role or 'all'}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(args, env={**self.env, **overrides}, stdout=log, stderr=log)
        self.workers.append(process)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.workers.clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("recovery")
    stack = DevStack(root / "stack", fast=True)
    stack.start()
    fake = FakeResend(api_key=KEY, record_content=False).start()
    env = {
        **os.environ,
        **stack.env(),
        "KAFKA_TOPIC_PREFIX": f"rec-{uuid.uuid4().hex[:6]}-",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "EMAIL_PROVIDER": "resend",
        "RESEND_API_KEY": KEY,
        "RESEND_API_URL": fake.url,
        "TRACKING_SECRET": "recovery-tracking-secret-0123456789",
        "RELAY_INTERVAL_SECONDS": "0.2",
        "RECONCILE_INTERVAL_SECONDS": "1",
        "RECONCILE_STALL_SECONDS": "5",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "20",
        "LOG_LEVEL": "INFO",
    }
    settings = settings_from_env(env)
    migrate(settings)
    create_topics(settings)
    cluster = Cluster(stack=stack, fake=fake, env=env, logs=root)
    yield cluster
    cluster.stop_workers()
    fake.stop()
    stack.stop()


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(cluster.settings)
    yield engine
    await engine.dispose()
    cluster.stop_workers()
    cluster.fake.reset()


async def sponsor_with_leads(engine: AsyncEngine, leads: int) -> str:
    """A new sponsor with ``leads`` leads (``p<n>@<sponsor>.example``); its id."""
    sponsor_id = f"rec-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO sponsors (id, name, from_email, postal_address) "
                "VALUES (:s, 'R', 'r@rec.example', '1 Recovery Road')"
            ),
            {"s": sponsor_id},
        )
        await connection.execute(
            text(
                "INSERT INTO leads (sponsor_id, email, name) SELECT CAST(:s AS text), "
                "'p' || n || '@' || CAST(:s AS text) || '.example', 'P' || n "
                "FROM generate_series(1, :n) n"
            ),
            {"s": sponsor_id, "n": leads},
        )
    return sponsor_id


async def new_campaign(cluster: Cluster, engine: AsyncEngine, recipients: int) -> tuple[str, str]:
    """A sponsor with ``recipients`` leads and a queued campaign; the relay publishes it."""
    sponsor_id = await sponsor_with_leads(engine, recipients)
    async with session_factory(engine).begin() as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign = await logic.create(
            session,
            sponsor,
            CampaignIn(name="r", subject="Hi {{ name }}", message_body="Hello {{ name }}"),
        )
    return str(campaign.id), sponsor_id


async def progress(engine: AsyncEngine, campaign_id: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        status = await connection.scalar(
            text("SELECT status FROM campaigns WHERE id = :c"), {"c": campaign_id}
        )
        rows: dict[str, int] = dict(
            (
                await connection.execute(
                    text(
                        "SELECT status, count(*) FROM campaign_deliveries "
                        "WHERE campaign_id = :c GROUP BY status"
                    ),
                    {"c": campaign_id},
                )
            ).all()
        )
    return {"status": status, **{k: int(v) for k, v in rows.items()}}


async def wait_for(
    engine: AsyncEngine, campaign_id: str, predicate: Any, within: float, cluster: Cluster
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            state = await progress(engine, campaign_id)
        except Exception as exc:  # the database may be restarting
            state = {"error": repr(exc)}
        else:
            if predicate(state):
                return state
        await asyncio.sleep(0.25)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(cluster.logs.glob("*.log"))
    )
    raise AssertionError(f"campaign {campaign_id} stuck at {state}\n{logs}")


def assert_exactly_once(
    cluster: Cluster, sponsor_id: str, recipients: int, state: dict[str, Any]
) -> None:
    per_recipient = Counter(
        m.to[0] for m in cluster.fake.messages if m.to[0].endswith(f"@{sponsor_id}.example")
    )
    assert len(per_recipient) == recipients
    assert max(per_recipient.values()) == 1, "a recipient got two messages"
    assert state.get("pending", 0) == 0
    assert state["status"] == "sent"
    assert state["sent"] == recipients


def sent_at_least(count: int) -> Any:
    return lambda state: state.get("sent", 0) >= count


def done(state: dict[str, Any]) -> bool:
    return state.get("status") == "sent"


async def test_a_sender_killed_mid_campaign_is_replaced_without_loss_or_duplicates(
    cluster: Cluster, db: AsyncEngine
) -> None:
    cluster.start_worker("planner")
    cluster.start_worker("relay")
    doomed = cluster.start_worker("sender", PROVIDER_RATE_PER_SECOND="25")
    campaign_id, sponsor_id = await new_campaign(cluster, db, 20_000)
    await wait_for(db, campaign_id, sent_at_least(3000), 120, cluster)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    cluster.start_worker("sender", PROVIDER_RATE_PER_SECOND="200")
    state = await wait_for(db, campaign_id, done, 180, cluster)
    assert_exactly_once(cluster, sponsor_id, 20_000, state)


async def test_sigterm_drains_a_sender_cleanly(cluster: Cluster, db: AsyncEngine) -> None:
    cluster.start_worker("planner")
    cluster.start_worker("relay")
    leaving = cluster.start_worker("sender", PROVIDER_RATE_PER_SECOND="25")
    campaign_id, sponsor_id = await new_campaign(cluster, db, 10_000)
    await wait_for(db, campaign_id, sent_at_least(2000), 120, cluster)
    started = time.monotonic()
    leaving.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(leaving.wait, 30) == 0
    assert time.monotonic() - started < 25
    cluster.start_worker("sender", PROVIDER_RATE_PER_SECOND="200")
    state = await wait_for(db, campaign_id, done, 180, cluster)
    assert_exactly_once(cluster, sponsor_id, 10_000, state)


async def test_a_broker_that_loses_its_data_does_not_strand_the_campaign(
    cluster: Cluster, db: AsyncEngine
) -> None:
    cluster.start_worker(PROVIDER_RATE_PER_SECOND="25")
    campaign_id, sponsor_id = await new_campaign(cluster, db, 10_000)
    await wait_for(db, campaign_id, sent_at_least(2000), 120, cluster)
    cluster.stack.broker.stop()  # memory storage: every topic and offset is gone
    await asyncio.sleep(1)
    cluster.stack.broker.start()
    state = await wait_for(db, campaign_id, done, 240, cluster)
    assert_exactly_once(cluster, sponsor_id, 10_000, state)


async def test_workers_ride_out_a_postgres_restart(cluster: Cluster, db: AsyncEngine) -> None:
    cluster.start_worker(PROVIDER_RATE_PER_SECOND="25")
    campaign_id, sponsor_id = await new_campaign(cluster, db, 10_000)
    await wait_for(db, campaign_id, sent_at_least(2000), 120, cluster)
    cluster.stack.postgres.stop(mode="immediate")
    await asyncio.sleep(2)
    cluster.stack.postgres.start()
    state = await wait_for(db, campaign_id, done, 240, cluster)
    assert_exactly_once(cluster, sponsor_id, 10_000, state)


async def test_a_provider_outage_of_30_seconds_loses_nothing(
    cluster: Cluster, db: AsyncEngine
) -> None:
    cluster.start_worker(PROVIDER_RATE_PER_SECOND="25")
    campaign_id, sponsor_id = await new_campaign(cluster, db, 5_000)
    await wait_for(db, campaign_id, sent_at_least(1000), 120, cluster)
    cluster.fake.fail_for(30, status=500)
    state = await wait_for(db, campaign_id, done, 240, cluster)
    assert_exactly_once(cluster, sponsor_id, 5_000, state)
    assert any(r.status == 500 for r in cluster.fake.requests)


async def test_two_senders_in_a_429_storm_keep_to_the_global_rate(
    cluster: Cluster, db: AsyncEngine
) -> None:
    rate = 10.0
    pace = {"PROVIDER_RATE_PER_SECOND": str(rate), "PROVIDER_BATCH_SIZE": "10"}
    cluster.start_worker("planner", **pace)
    cluster.start_worker("relay", **pace)
    cluster.start_worker("sender", **pace)
    cluster.start_worker("sender", **pace)
    await asyncio.sleep(8)  # both senders joined the group and split the partitions
    cluster.fake.set_rate_limit(rate)
    campaign_id, sponsor_id = await new_campaign(cluster, db, 1500)
    await wait_for(db, campaign_id, sent_at_least(300), 120, cluster)
    cluster.fake.fail_for(4, status=429, retry_after=1)
    state = await wait_for(db, campaign_id, done, 240, cluster)
    assert_exactly_once(cluster, sponsor_id, 1500, state)
    times = sorted(r.timestamp for r in cluster.fake.requests)
    busiest = max(sum(1 for t in times[i:] if t < start + 5.0) for i, start in enumerate(times))
    assert busiest <= rate * 5 * 1.1, f"{busiest} requests in a 5 s window"
