"""The fast lane across processes: a campaign sender and a message-sender, each pacing
itself, together stay within ``PROVIDER_RATE_PER_SECOND`` (each alone would take it all).

On a stack of its own with workers as real processes (``tests/sending/test_recovery.py``).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.messages import MessageIn
from schemas.triggers import StarterIn
from service.db import session_factory
from service.messages import logic as messages
from service.triggers import starter
from service.triggers.starter import THANK_YOU
from tests.conftest import eventually
from tests.sending.test_recovery import (
    Cluster,
    cluster,  # noqa: F401
    db,  # noqa: F401
    done,
    new_campaign,
    wait_for,
)

RATE = 10.0
MESSAGES = 30


async def _queue_messages(engine: AsyncEngine, on: Cluster, sponsor_id: str) -> None:
    async with session_factory(engine).begin() as session:
        await starter.install(session, sponsor_id, StarterIn(team=["team@lane.example"]))
        await messages.queue(
            session,
            on.settings,
            sponsor_id,
            [MessageIn(type=THANK_YOU, to=f"m{n}@lane.example") for n in range(MESSAGES)],
            None,
        )


async def test_a_campaign_and_messages_sent_together_keep_to_the_provider_rate(
    cluster: Cluster,  # noqa: F811
    db: AsyncEngine,  # noqa: F811
) -> None:
    pace = {"PROVIDER_RATE_PER_SECOND": str(RATE), "PROVIDER_BATCH_SIZE": "10"}
    for role in ("planner", "relay", "sender", "message-sender"):
        cluster.start_worker(role, **pace)
    campaign_id, sponsor_id = await new_campaign(cluster, db, 600)
    await wait_for(db, campaign_id, lambda s: s.get("sent", 0) >= 50, 120, cluster)
    await _queue_messages(db, cluster, sponsor_id)
    await wait_for(db, campaign_id, done, 240, cluster)

    async def all_messages_sent() -> bool:
        return len(_lane_messages(cluster)) >= MESSAGES

    await eventually(all_messages_sent, within=60)
    times = sorted(r.timestamp for r in cluster.fake.requests if r.path.startswith("/emails"))
    busiest = max(sum(1 for t in times[i:] if t < start + 5.0) for i, start in enumerate(times))
    # A lane that wakes may overshoot for the second before the other reads its heartbeat.
    assert busiest <= RATE * 5 * 1.15, f"{busiest} requests in a 5 s window"
    assert len(_lane_messages(cluster)) == MESSAGES


def _lane_messages(on: Cluster) -> list[str]:
    return [m.to[0] for m in on.fake.messages if m.to[0].endswith("@lane.example")]
