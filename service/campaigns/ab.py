"""A/B tests of campaigns: the rules (``docs/ab-tests.md``).

A test share of the audience is dealt round the variants (``ab_repository``);
once it is sent, the wait starts and the ``ab.decide`` timer (claimed with
SKIP LOCKED by the ``timers`` role) chooses the winner by the test's measure,
with a two-proportion z-test at 95 %; a person may choose first through the API.
Choosing writes the rest of the audience's rows (variant NULL, sent the winner)
and opens its window, in the transaction that records the decision.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.ab import (
    MAX_VARIANTS,
    MIN_VARIANTS,
    VARIANT_NAMES,
    Measure,
    VariantsOut,
    VariantStatsOut,
)
from schemas.http import CampaignIn
from service.campaigns import ab_repository, lifecycle, repository
from service.campaigns.ab_repository import VariantCounts
from service.campaigns.lifecycle import Action, CampaignStatus
from service.errors import Conflict, NotFound, Unprocessable
from service.models import Campaign
from service.templates import logic as templates
from service.templates.content import Content
from service.timers.repository import DueTimer

# Below this two-sided p-value the leader is better "with reasonable confidence".
SIGNIFICANCE = 0.05


def settings_of(body: CampaignIn) -> dict[str, Any] | None:
    """The A/B test as stored (``campaigns.ab_test``), or None; 422 naming the field."""
    if body.variants is None and body.ab_test is None:
        return None
    if body.ab_test is None:
        raise Unprocessable("validation_error", "variants need an ab_test", "ab_test")
    variants = body.variants or []
    if not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
        raise Unprocessable(
            "invalid_variants",
            f"an A/B test has {MIN_VARIANTS} to {MAX_VARIANTS} variants, not {len(variants)}",
            "variants",
        )
    stored = [variant.model_dump(exclude_none=True) for variant in variants]
    for i, variant in enumerate(stored):
        if variant.get("html_body") == "":
            raise Unprocessable("validation_error", "html_body may not be empty", f"variants.{i}")
    return {**body.ab_test.model_dump(), "variants": stored}


def name(index: int) -> str:
    return VARIANT_NAMES[index]


def index_of(variant: str, ab_test: dict[str, Any]) -> int:
    """The index of a variant by name; 422 for one the test does not have."""
    index = VARIANT_NAMES.find(variant)
    if index < 0 or index >= len(ab_test["variants"]):
        raise Unprocessable("unknown_variant", f"this test has no variant {variant!r}", "variant")
    return index


def variant_content(campaign: Campaign, index: int) -> tuple[Content, str | None]:
    """Variant ``index``'s content (the campaign's where it changes nothing) and sender name."""
    assert campaign.ab_test is not None
    sender_name: str | None = campaign.ab_test["variants"][index].get("sender_name")
    return templates.content_of(campaign, index), sender_name


# ---------------------------------------------------------------- the measure and the test


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of x1/n1 against x2/n2.

    1.0 when either side has no trials or the pooled rate is 0 or 1 (no evidence).
    """
    if n1 <= 0 or n2 <= 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    if pooled <= 0.0 or pooled >= 1.0:
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def _trials(counts: VariantCounts, measure: Measure) -> tuple[int, int]:
    """(successes, trials) of ``measure``: opens or clicks per sent, clicks per opener."""
    if measure == "open_rate":
        return counts.opened, counts.sent
    if measure == "click_rate":
        return counts.clicked, counts.sent
    return counts.clicked, counts.opened


def rate(successes: int, trials: int) -> float:
    return successes / trials if trials else 0.0


@dataclass(frozen=True, slots=True)
class Standing:
    """Each variant's rate by the measure, the leader, and each one's p-value against it."""

    rates: list[float]
    leader: int
    p_values: list[float | None]


def standing(counts: list[VariantCounts], n_variants: int, measure: Measure) -> Standing:
    by_index = {c.variant: c for c in counts}
    trials = [
        _trials(by_index.get(i, VariantCounts(i, 0, 0, 0, 0)), measure) for i in range(n_variants)
    ]
    rates = [rate(x, n) for x, n in trials]
    leader = max(range(n_variants), key=lambda i: (rates[i], -i))  # ties: the first
    x0, n0 = trials[leader]
    p_values: list[float | None] = [
        None if i == leader else two_proportion_p(x0, n0, x, n) for i, (x, n) in enumerate(trials)
    ]
    return Standing(rates, leader, p_values)


def choose(ab_test: dict[str, Any], counts: list[VariantCounts]) -> tuple[int, dict[str, Any]]:
    """The winner and why: the leader if it beats every other variant at 95 %, else the
    fallback's choice (the first variant, or the leader all the same)."""
    n = len(ab_test["variants"])
    measure: Measure = ab_test["measure"]
    found = standing(counts, n, measure)
    worst_p = max((p for p in found.p_values if p is not None), default=1.0)
    significant = worst_p < SIGNIFICANCE
    if significant:
        winner, reason = found.leader, "significant at 95 %"
    else:
        first = ab_test["fallback"] == "first"
        winner = 0 if first else found.leader
        reason = "fallback: no significant difference"
    return winner, {
        "how": "measure" if significant else "fallback",
        "reason": reason,
        "measure": measure,
        "rates": {name(i): round(r, 6) for i, r in enumerate(found.rates)},
        "leader": name(found.leader),
        "p_value": round(worst_p, 6),
        "confidence": round(1 - worst_p, 6),
        "fallback": ab_test["fallback"],
    }


# ---------------------------------------------------------------- deciding


async def decide(
    session: AsyncSession, campaign: Campaign, winner: int, decision: dict[str, Any]
) -> int:
    """Record the winner, plan the rest of the audience and release it; the rest's size.

    The caller holds the campaign's row lock; ``CHOOSE`` refuses any status but
    ``testing`` and ``waiting_for_winner``, so a decision is taken once.
    """
    assert campaign.ab_test is not None
    lifecycle.apply(campaign, Action.CHOOSE)
    before = campaign.total_recipients
    campaign.ab_winner = winner
    campaign.ab_decision = {
        **decision,
        "winner": name(winner),
        "decided_at": datetime.now(UTC).isoformat(),
    }
    plan = await ab_repository.plan_rest(session, campaign, campaign.ab_test["plan"]["batch_size"])
    campaign.total_recipients, campaign.batch_count = plan.recipients, plan.batches
    await session.flush()
    await repository.open_window(session, campaign, campaign.ab_test["plan"]["window"])
    await ab_repository.cancel_timer(session, campaign.id)
    if not await ab_repository.pending_rows(session, campaign.id):
        lifecycle.apply(campaign, Action.FINISH)  # the test share was the whole audience
        campaign.completed_at = func.now()
    return plan.recipients - before


async def choose_by_hand(session: AsyncSession, campaign: Campaign, variant: str) -> None:
    """``POST …/winner``: 409 unless testing or waiting for the winner."""
    if campaign.ab_test is None:
        raise Conflict("not_an_ab_test", "this campaign has no variants", "variant")
    lifecycle.require(campaign.status, Action.CHOOSE)
    index = index_of(variant, campaign.ab_test)
    await decide(session, campaign, index, {"how": "manual", "reason": "manual"})


async def fire_decide(session: AsyncSession, timer: DueTimer) -> None:
    """The ``ab.decide`` timer: choose by the measure if the campaign still waits.

    A paused campaign is left alone (resume sets the timer again); a cancelled
    or decided one too.
    """
    campaign = await repository.get_for_update(session, uuid.UUID(timer.payload["campaign_id"]))
    if campaign is None or campaign.ab_test is None:
        return
    if campaign.status != CampaignStatus.WAITING_FOR_WINNER or campaign.ab_winner is not None:
        return
    counts = await ab_repository.variant_counts(session, campaign.id)
    winner, decision = choose(campaign.ab_test, counts)
    await decide(session, campaign, winner, decision)


async def resume(session: AsyncSession, campaign: Campaign) -> bool:
    """Resume an A/B campaign paused before its winner; False if it is past that.

    Back to ``testing`` while test rows are pending, else to ``waiting_for_winner``
    with the timer set for the end of the wait (now, if it is over).
    """
    if campaign.ab_test is None or campaign.ab_winner is not None or campaign.planned_at is None:
        return False
    if await ab_repository.pending_rows(session, campaign.id):
        lifecycle.apply(campaign, Action.RESUME_TEST)
        return True
    lifecycle.apply(campaign, Action.RESUME_CHOOSING)
    await session.flush()
    if campaign.ab_decide_at is None:
        await ab_repository.schedule_decision(session, campaign.id)
    else:
        due = max(campaign.ab_decide_at, datetime.now(UTC))
        await ab_repository.schedule_timer(session, campaign.id, due)
    return True


# ---------------------------------------------------------------- what the API shows


async def preview_variant(
    session: AsyncSession, campaign: Campaign, variant: str | None, delivery_id: int | None
) -> int | None:
    """The variant a preview shows: the one asked for, else the lead's (its row's variant,
    or the winner for a row of the rest), else the campaign's own content (None)."""
    if campaign.ab_test is None:
        if variant is not None:
            raise Unprocessable("not_an_ab_test", "this campaign has no variants", "variant")
        return None
    if variant is not None:
        return index_of(variant, campaign.ab_test)
    if delivery_id is None:
        return None
    found = await ab_repository.variant_of(session, delivery_id)
    return found if found is not None else campaign.ab_winner


async def view(session: AsyncSession, campaign: Campaign) -> VariantsOut:
    """``GET …/variants``: each variant's test-share figures (human opens and clicks),
    its confidence against the leader by the test's measure, and the decision."""
    if campaign.ab_test is None:
        raise NotFound("not_an_ab_test", "this campaign has no variants", "campaign_id")
    ab_test = campaign.ab_test
    counts = await ab_repository.variant_counts(session, campaign.id)
    n = len(ab_test["variants"])
    found = standing(counts, n, ab_test["measure"])
    by_index = {c.variant: c for c in counts}
    rows = []
    for i in range(n):
        c = by_index.get(i, VariantCounts(i, 0, 0, 0, 0))
        p_value = found.p_values[i]
        rows.append(
            VariantStatsOut(
                variant=name(i),
                subject=variant_content(campaign, i)[0].subject,
                sent=c.sent,
                delivered=c.delivered,
                opened=c.opened,
                clicked=c.clicked,
                open_rate=rate(c.opened, c.sent),
                click_rate=rate(c.clicked, c.sent),
                click_to_open_rate=rate(c.clicked, c.opened),
                p_value=p_value,
                confidence=None if p_value is None else 1 - p_value,
                leader=i == found.leader,
                winner=i == campaign.ab_winner,
            )
        )
    return VariantsOut(
        campaign_id=str(campaign.id),
        status=campaign.status,
        measure=ab_test["measure"],
        test_share=ab_test["test_share"],
        wait_seconds=ab_test["wait_seconds"],
        fallback=ab_test["fallback"],
        decide_at=campaign.ab_decide_at,
        variants=rows,
        decision=campaign.ab_decision,
    )
