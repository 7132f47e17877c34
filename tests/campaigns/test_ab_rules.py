"""A/B rules without the workers: the two-proportion test, the choice, the split,
and what the API refuses (``service.campaigns.ab``)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import CampaignBatch
from service.campaigns import ab, ab_repository, repository
from service.campaigns.ab_repository import VariantCounts
from service.kafka import Producer
from service.settings import Settings
from tests import factories
from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from worker.delivery.batches import CampaignBatches
from worker.providers import build_provider
from worker.ratelimit import Pacer


def test_the_two_proportion_test_gives_the_textbook_p_value() -> None:
    # 45/100 against 30/100: pooled 0.375, z = 2.1909, two-sided p = 0.02846.
    assert ab.two_proportion_p(45, 100, 30, 100) == pytest.approx(0.02846, abs=5e-5)
    # 12/100 against 10/100: pooled 0.11, z = 0.4520, p = 0.6513.
    assert ab.two_proportion_p(12, 100, 10, 100) == pytest.approx(0.6513, abs=5e-4)
    # 20/30 against 3/30: pooled 23/60, z = 4.514, p = 6.36e-6.
    assert ab.two_proportion_p(20, 30, 3, 30) == pytest.approx(6.36e-6, rel=0.01)
    assert ab.two_proportion_p(3, 30, 20, 30) == ab.two_proportion_p(20, 30, 3, 30)


def test_the_two_proportion_test_without_evidence_is_1() -> None:
    assert ab.two_proportion_p(0, 0, 5, 10) == 1.0
    assert ab.two_proportion_p(0, 50, 0, 50) == 1.0
    assert ab.two_proportion_p(50, 50, 50, 50) == 1.0


def _test(measure: str = "open_rate", fallback: str = "first", n: int = 2) -> dict[str, Any]:
    return {"measure": measure, "fallback": fallback, "variants": [{}] * n}


def test_a_leader_significant_against_every_variant_wins_by_the_measure() -> None:
    counts = [VariantCounts(0, 100, 100, 30, 1), VariantCounts(1, 100, 100, 45, 2)]
    winner, decision = ab.choose(_test(), counts)
    assert winner == 1 and decision["how"] == "measure" and decision["leader"] == "B"
    assert decision["p_value"] == pytest.approx(0.02846, abs=5e-5)
    assert decision["confidence"] == pytest.approx(0.97154, abs=5e-5)


def test_a_leader_not_significant_against_one_variant_falls_back() -> None:
    counts = [
        VariantCounts(0, 100, 100, 30, 0),
        VariantCounts(1, 100, 100, 45, 0),
        VariantCounts(2, 100, 100, 40, 0),
    ]
    first, decision = ab.choose(_test(n=3), counts)
    assert first == 0 and decision["how"] == "fallback" and decision["leader"] == "B"
    best, decision = ab.choose(_test(n=3, fallback="best_so_far"), counts)
    assert best == 1 and decision["reason"] == "fallback: no significant difference"


def test_click_to_open_rate_counts_clicks_among_human_openers() -> None:
    counts = [VariantCounts(0, 100, 100, 10, 9), VariantCounts(1, 100, 100, 80, 16)]
    found = ab.standing(counts, 2, "click_to_open_rate")
    assert found.rates == [0.9, 0.2] and found.leader == 0
    assert ab.standing(counts, 2, "click_rate").leader == 1


async def _ab_draft(
    client: httpx.AsyncClient, sponsor: str, headers: dict[str, str], n_variants: int, share: int
) -> uuid.UUID:
    body = factories.campaign(
        draft=True,
        variants=[{"subject": f"Subject {i}"} for i in range(n_variants)],
        ab_test={"test_share": share, "wait_seconds": 60},
    )
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=body
    )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


async def _plan_test_share(
    sessions: async_sessionmaker[AsyncSession], campaign_id: uuid.UUID, sponsor: str
) -> dict[int, int]:
    """Plan the test share in a transaction that is rolled back; lead → variant."""
    async with sessions() as session:
        campaign = await repository.get(session, sponsor, campaign_id)
        assert campaign.ab_test is not None
        variants = len(campaign.ab_test["variants"])
        await ab_repository.plan_test_share(session, campaign, 7, 30, variants)
        rows = await session.execute(
            text("SELECT lead_id, variant FROM campaign_deliveries WHERE campaign_id = :id"),
            {"id": campaign_id},
        )
        split = {int(lead): int(variant) for lead, variant in rows.all()}
        await session.rollback()
    return split


async def test_the_split_is_the_same_in_every_planning_and_even_within_one(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = token(sponsor)
    await factories.add_leads(
        client, sponsor, headers, factories.leads(101, domain="split.example")
    )
    campaign_id = await _ab_draft(client, sponsor, headers, 3, 30)
    first = await _plan_test_share(sessions, campaign_id, sponsor)
    second = await _plan_test_share(sessions, campaign_id, sponsor)
    assert first == second
    assert len(first) == 31  # ceil(30 % of 101)
    sizes = Counter(first.values())
    assert sorted(sizes) == [0, 1, 2] and max(sizes.values()) - min(sizes.values()) <= 1
    # Another campaign over the same leads shuffles them another way.
    other = await _ab_draft(client, sponsor, headers, 3, 30)
    assert set(await _plan_test_share(sessions, other, sponsor)) != set(first)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variants": [{"subject": "only one"}]}, "variants"),
        ({"variants": [{"subject": f"s{i}"} for i in range(7)]}, "variants"),
        ({"ab_test": {"test_share": 0, "wait_seconds": 60}}, "ab_test.test_share"),
        ({"ab_test": {"test_share": 51, "wait_seconds": 60}}, "ab_test.test_share"),
        (
            {"ab_test": {"test_share": 20, "wait_seconds": 60, "measure": "revenue"}},
            "ab_test.measure",
        ),
        ({"ab_test": None}, "ab_test"),
        ({"variants": [{"subject": "{{ broken"}, {"subject": "fine"}]}, "variants.0.subject"),
        (
            {"variants": [{"message_body": "[a](https://else.example)"}, {"subject": "x"}]},
            "variants.0",
        ),
    ],
)
async def test_a_bad_ab_test_is_422_naming_the_field(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    change: dict[str, Any],
    field: str,
) -> None:
    body = factories.campaign(
        draft=True,
        message_body="Hello [offer](https://sponsor.example/offer)",
        variants=[{"subject": "A"}, {"subject": "B"}],
        ab_test={"test_share": 20, "wait_seconds": 60},
    )
    body.update(change)
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token(sponsor), json=body
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


async def test_a_variant_may_change_sender_name_and_preheader(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    body = factories.campaign(
        draft=True,
        variants=[{"sender_name": "The Team"}, {"preheader": "Only today", "subject": "B"}],
        ab_test={"test_share": 10, "wait_seconds": 0, "measure": "click_rate"},
    )
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token(sponsor), json=body
    )
    assert response.status_code == 202, response.text
    stored = response.json()["ab_test"]
    assert stored["variants"] == [{"sender_name": "The Team"}, body["variants"][1]]
    assert stored["measure"] == "click_rate" and stored["fallback"] == "first"


async def test_a_sender_that_cached_the_campaign_while_testing_sends_the_rest_the_winner(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
    fake: FakeResend,
) -> None:
    headers = token(sponsor)
    await factories.add_leads(client, sponsor, headers, factories.leads(10, domain="c.example"))
    campaign_id = await _ab_draft(client, sponsor, headers, 2, 50)
    # Rows as the planner and a decision leave them, without their batch messages, so
    # that only this sender sends them.
    async with sessions.begin() as session:
        campaign = await repository.get(session, sponsor, campaign_id, lock=True)
        plan = await ab_repository.plan_test_share(session, campaign, 100, 50, 2)
        campaign.batch_count, campaign.status = plan.batches, "testing"
        campaign.planned_at = func.now()
    producer = Producer(migrated)
    provider = build_provider(migrated)
    try:
        batches = CampaignBatches(sessions, provider, Pacer(1000), producer, migrated)
        cached = await batches.contexts.get(campaign_id)
        assert cached is not None and cached.status == "testing" and cached.winner is None
        async with sessions.begin() as session:
            campaign = await repository.get(session, sponsor, campaign_id, lock=True)
            await ab_repository.plan_rest(session, campaign, 100)
            campaign.batch_count, campaign.status, campaign.ab_winner = 2, "sending", 1
        await batches.send_batch(CampaignBatch(campaign_id=campaign_id, batch_no=1, send_round=0))
    finally:
        await provider.aclose()
        producer.close()
    subjects = [m.subject for m in fake.messages if m.tag("campaign_id") == str(campaign_id)]
    assert len(subjects) == 5 and all(s == "Subject 1" for s in subjects)
