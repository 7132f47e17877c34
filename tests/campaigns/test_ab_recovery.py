"""A/B tests survive a sender killed with SIGKILL in either phase: every lead still gets
exactly one message, of one variant (workers as real processes, on a stack of their own,
as ``tests/sending/test_recovery.py``)."""

from __future__ import annotations

import signal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.ab import ABTestIn, VariantIn
from schemas.http import CampaignIn
from service.campaigns import logic
from service.db import session_factory
from service.sponsors import repository as sponsors
from tests.sending.test_recovery import (  # noqa: F401 - fixtures
    Cluster,
    assert_exactly_once,
    cluster,
    db,
    done,
    sponsor_with_leads,
    wait_for,
)

LEADS = 1000


async def ab_campaign(engine: AsyncEngine) -> tuple[str, str]:
    """A sponsor with ``LEADS`` leads and a queued A/B campaign choosing as soon as its
    test share is sent."""
    sponsor_id = await sponsor_with_leads(engine, LEADS)
    async with session_factory(engine).begin() as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign = await logic.create(
            session,
            sponsor,
            CampaignIn(
                name="r",
                subject="Hi {{ name }}",
                message_body="Hello {{ name }}",
                variants=[VariantIn(subject="A {{ name }}"), VariantIn(subject="B {{ name }}")],
                ab_test=ABTestIn(test_share=50, wait_seconds=0),
            ),
        )
    return str(campaign.id), sponsor_id


async def test_a_sender_killed_in_each_phase_leaves_every_lead_one_message_of_one_variant(
    cluster: Cluster,  # noqa: F811 - the fixture
    db: AsyncEngine,  # noqa: F811 - the fixture
) -> None:
    # Batches of 10 at 10 requests a second: each phase takes seconds, long enough to kill.
    for role in ("planner", "relay", "timers"):
        cluster.start_worker(role, PROVIDER_BATCH_SIZE="10")
    slow = {"PROVIDER_RATE_PER_SECOND": "10", "PROVIDER_BATCH_SIZE": "10"}
    doomed = cluster.start_worker("sender", **slow)
    campaign_id, sponsor_id = await ab_campaign(db)

    def testing_with_some_sent(state: dict[str, object]) -> bool:
        return state.get("status") == "testing" and int(str(state.get("sent", 0))) >= 150

    await wait_for(db, campaign_id, testing_with_some_sent, 60, cluster)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    doomed = cluster.start_worker("sender", **slow)

    def rest_sending(state: dict[str, object]) -> bool:
        return state.get("status") == "sending" and int(str(state.get("sent", 0))) >= 650

    await wait_for(db, campaign_id, rest_sending, 90, cluster)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    cluster.start_worker("sender", PROVIDER_RATE_PER_SECOND="1000")
    state = await wait_for(db, campaign_id, done, 90, cluster)
    assert_exactly_once(cluster, sponsor_id, LEADS, state)

    async with db.connect() as connection:
        variants: dict[int, int] = dict(
            (
                await connection.execute(
                    text(
                        "SELECT coalesce(variant, -1), count(*) FROM campaign_deliveries "
                        "WHERE campaign_id = :c GROUP BY 1"
                    ),
                    {"c": campaign_id},
                )
            ).all()
        )
    assert variants == {0: 250, 1: 250, -1: 500}
    by_subject = {m.to[0]: m.subject[0] for m in cluster.fake.messages}
    sent_a = sum(1 for to, first in by_subject.items() if sponsor_id in to and first == "A")
    # No human opens: the fallback sends A to the rest.
    assert sent_a == 750
