"""The trigger role killed with SIGKILL in the middle of a stream of lead events.

On a stack of its own with workers as real processes (``tests/sending/test_recovery.py``):
a trigger process dies between batches it has committed and offsets it has not,
another takes over and reads those events again; every event that matched the
rule still yields its messages once, queued once and sent once.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import TOPIC_LEADS
from schemas.triggers import StarterIn
from service.db import session_factory
from service.kafka import Producer
from service.triggers import starter
from tests.sending.test_recovery import Cluster, cluster, db  # noqa: F401

LEADS = 600
WAVE = 20  # leads published at once, every WAVE_EVERY seconds: 3 s for the stream
WAVE_EVERY = 0.1
TEAM = "team@trigger-recovery.example"


async def _sponsor_with_starter_rule(engine: AsyncEngine) -> str:
    """A sponsor whose rule sends an alert to the team and thanks to each hot lead."""
    sponsor_id = f"trg-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO sponsors (id, name, from_email, postal_address) "
                "VALUES (:s, 'T', 't@trg.example', '1 Trigger Road')"
            ),
            {"s": sponsor_id},
        )
    async with session_factory(engine).begin() as session:
        await starter.install(session, sponsor_id, StarterIn(team=[TEAM]))
    return sponsor_id


def _hot_lead(sponsor_id: str, email: str) -> tuple[str, str, bytes]:
    event = {
        "id": uuid.uuid4().hex,
        "type": "lead.upserted",
        "sponsor_id": sponsor_id,
        "email": email,
        "first_name": "Ada",
        "intent_level": "hot",
        "updated_at": datetime.now(UTC).isoformat(),
    }
    return TOPIC_LEADS, f"{sponsor_id}:{email}", orjson.dumps(event)


async def _stream_hot_leads(on: Cluster, sponsor_id: str, emails: list[str]) -> None:
    """The leads as a stream spread over seconds, not one burst: however fast the
    trigger worker, a kill that lands early in the stream leaves events to read."""
    producer = Producer(on.settings)
    try:
        for start in range(0, len(emails), WAVE):
            await producer.send(_hot_lead(sponsor_id, e) for e in emails[start : start + WAVE])
            await asyncio.sleep(WAVE_EVERY)
    finally:
        await asyncio.to_thread(producer.close)


async def _messages(engine: AsyncEngine, sponsor_id: str) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT status, count(*) FROM messages WHERE sponsor_id = :s GROUP BY status"),
            {"s": sponsor_id},
        )
        return {status: int(n) for status, n in rows.all()}


async def _wait(engine: AsyncEngine, sponsor_id: str, predicate: object, within: float) -> None:
    deadline = time.monotonic() + within
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = await _messages(engine, sponsor_id)
        if predicate(counts):  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"messages stuck at {counts}")


async def test_a_trigger_worker_killed_mid_stream_queues_and_sends_each_message_once(
    cluster: Cluster,  # noqa: F811
    db: AsyncEngine,  # noqa: F811
) -> None:
    fast = {"PROVIDER_RATE_PER_SECOND": "2000"}
    # A short session: the group gives up on the killed member within 2 s, not 6.
    brief = {"KAFKA_SESSION_TIMEOUT_MS": "2000"}
    cluster.start_worker("relay")
    cluster.start_worker("message-sender", **fast)
    doomed = cluster.start_worker("trigger", **brief)
    sponsor_id = await _sponsor_with_starter_rule(db)
    emails = [f"lead{n}@{sponsor_id}.example" for n in range(LEADS)]
    stream = asyncio.create_task(_stream_hot_leads(cluster, sponsor_id, emails))
    await _wait(db, sponsor_id, lambda c: sum(c.values()) >= 200, 60)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    queued_when_killed = sum((await _messages(db, sponsor_id)).values())
    cluster.start_worker("trigger", **brief)
    await stream
    await _wait(db, sponsor_id, lambda c: c.get("sent", 0) >= 2 * LEADS, 90)
    await asyncio.sleep(0.5)  # a duplicate queued late would show now
    counts = await _messages(db, sponsor_id)
    assert counts == {"sent": 2 * LEADS}
    assert queued_when_killed < 2 * LEADS, "the kill came after the whole stream"
    to = Counter(m.to[0] for m in cluster.fake.messages)
    assert all(to[email] == 1 for email in emails)
    assert to[TEAM] == LEADS
    assert sum(to.values()) == 2 * LEADS
