"""The same numbers everywhere: the preview, campaign creation and the planner count
an audience as a plain reading of the leads does (suppressions, deleted leads and
concurrent writers included), and an estimate's error bound holds at its stated rate."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.audiences import repository
from service.audiences.filters import audience_criterion
from service.campaigns import repository as campaigns
from service.models import Campaign, Lead, Sponsor, Suppression
from tests.audiences.test_audience_filters import _random_leads, evaluate, filters

PRESETS: dict[str, Any] = {
    "all": lambda r: True,
    "hot": lambda r: r["intent_level"] == "hot",
    "warm": lambda r: r["intent_level"] == "warm",
    "cold": lambda r: r["intent_level"] == "cold",
    "new": lambda r: r["follow_up_status"] == "new",
    "contacted": lambda r: r["follow_up_status"] != "new",
}


class Audience(tuple[str, list[dict[str, Any]]]):
    """(sponsor id, the leads that remain: not deleted, address not suppressed)."""

    def __repr__(self) -> str:
        return f"Audience({self[0]!r}, {len(self[1])} reachable leads)"


@pytest.fixture(scope="module")
async def audience(sessions: async_sessionmaker[AsyncSession]) -> Audience:
    """Random leads; some suppressed for the sponsor, some globally, some deleted."""
    sponsor_id = f"sp-counts-{uuid.uuid4().hex[:8]}"
    # Addresses of their own: a global suppression here must not reach other tests' leads.
    rows = [
        {**row, "email": row["email"].replace("@prop.example", "@counts.example")}
        for row in _random_leads(150, seed=20261206)
    ]
    rng = random.Random(6)
    suppressed = {r["email"]: rng.choice([sponsor_id, None]) for r in rng.sample(rows, 20)}
    deleted = {r["email"] for r in rng.sample(rows, 15)}
    async with sessions.begin() as session:
        await session.execute(
            insert(Sponsor).values(id=sponsor_id, name="Counts", from_email="c@sponsor.example")
        )
        await session.execute(insert(Lead), [{**row, "sponsor_id": sponsor_id} for row in rows])
        # A suppression of another sponsor reaches nobody here.
        await session.execute(
            insert(Suppression),
            [
                {"sponsor_id": owner, "email": email, "reason": "manual"}
                for email, owner in suppressed.items()
            ]
            + [{"sponsor_id": "someone-else", "email": rows[0]["email"], "reason": "manual"}],
        )
        await session.execute(
            delete(Lead).where(Lead.sponsor_id == sponsor_id, Lead.email.in_(deleted))
        )
    gone = suppressed.keys() | deleted
    return Audience((sponsor_id, [r for r in rows if r["email"] not in gone]))


async def _planned(session: AsyncSession, sponsor_id: str, audience_type: str, raw: Any) -> int:
    """The planner's recipients for a campaign with this audience (the caller rolls back)."""
    campaign = Campaign(
        id=uuid.uuid4(),
        sponsor_id=sponsor_id,
        name="counts",
        subject="s",
        audience_type=audience_type,
        audience_filter=raw,
        status="queued",
    )
    session.add(campaign)
    await session.flush()
    plan = await campaigns.plan_deliveries(session, campaign, batch_size=7)
    return plan.recipients


async def _everywhere(
    session: AsyncSession, sponsor_id: str, audience_type: str, raw: Any
) -> dict[str, int]:
    """The count of one audience as every reader of it sees it, in one snapshot."""
    quick = await repository.preview(session, sponsor_id, audience_type, raw, exact_budget_ms=0)
    budgeted = await repository.preview(
        session, sponsor_id, audience_type, raw, exact_budget_ms=60_000
    )
    criterion = audience_criterion(audience_type, raw)
    where = [Lead.sponsor_id == sponsor_id, Lead.email != ""]
    plain = select(func.count()).select_from(Lead).where(*where)
    if criterion is not None:
        plain = plain.where(criterion)
    plain = plain.where(
        ~select(Suppression.id)
        .where(
            Suppression.email == Lead.email,
            (Suppression.sponsor_id == Lead.sponsor_id) | Suppression.sponsor_id.is_(None),
        )
        .exists()
    )
    return {
        "preview": quick.count,
        "preview_with_budget": budgeted.count if budgeted.exact else -1,
        "campaign_creation": await campaigns.count_audience(
            session, sponsor_id, audience_type, raw
        ),
        "planner": await _planned(session, sponsor_id, audience_type, raw),
        "select_count": int(await session.scalar(plain) or 0),
    }


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=filters)
async def test_preview_creation_planner_and_a_plain_count_agree_for_any_filter(
    raw: dict[str, Any], sessions: async_sessionmaker[AsyncSession], audience: Audience
) -> None:
    sponsor_id, reachable = audience
    expected = sum(evaluate(raw, row) for row in reachable)
    async with sessions() as session:
        counts = await _everywhere(session, sponsor_id, "custom", raw)
    assert counts == dict.fromkeys(counts, expected)


@pytest.mark.parametrize("preset", sorted(PRESETS))
async def test_every_reader_counts_a_preset_alike(
    preset: str, sessions: async_sessionmaker[AsyncSession], audience: Audience
) -> None:
    sponsor_id, reachable = audience
    expected = sum(PRESETS[preset](row) for row in reachable)
    async with sessions() as session:
        counts = await _everywhere(session, sponsor_id, preset, None)
    assert counts == dict.fromkeys(counts, expected)


LeadWrite = Callable[[AsyncSession, int, str], Awaitable[None]]


async def churn(
    sessions: async_sessionmaker[AsyncSession],
    sponsor_id: str,
    stop: asyncio.Event,
    rng: random.Random,
    email_of: Callable[[], str],
    actions: Sequence[str],
    lead_writes: Mapping[str, LeadWrite],
) -> None:
    """One commit at a time until told to stop: an action drawn from ``actions``, either
    one of the caller's ``lead_writes`` (session, step, email) or ``suppress``, ``lift``
    or ``delete`` of the address."""
    n = 0
    while not stop.is_set():
        n += 1
        email, action = email_of(), rng.choice(actions)
        async with sessions.begin() as session:
            if action in lead_writes:
                await lead_writes[action](session, n, email)
            elif action == "suppress":
                await session.execute(
                    text(
                        "INSERT INTO suppressions (sponsor_id, email, reason) "
                        "VALUES (:s, :e, 'manual') ON CONFLICT DO NOTHING"
                    ),
                    {"s": rng.choice([sponsor_id, None]), "e": email},
                )
            elif action == "lift":
                await session.execute(delete(Suppression).where(Suppression.email == email))
            else:
                await session.execute(
                    delete(Lead).where(Lead.sponsor_id == sponsor_id, Lead.email == email)
                )
        await asyncio.sleep(0)


async def _churn(
    sessions: async_sessionmaker[AsyncSession], sponsor_id: str, stop: asyncio.Event
) -> None:
    """Add, change, suppress and delete leads until told to stop, one commit at a time."""
    rng = random.Random(7)

    async def add(session: AsyncSession, n: int, email: str) -> None:
        row = _random_leads(1, seed=n)[0]
        await session.execute(
            text(
                "INSERT INTO leads (sponsor_id, email, intent_level, intent_score, "
                "follow_up_status) VALUES (:s, :e, :l, :score, :f) "
                "ON CONFLICT DO NOTHING"
            ),
            {
                "s": sponsor_id,
                "e": email,
                "l": row["intent_level"],
                "score": row["intent_score"],
                "f": row["follow_up_status"],
            },
        )

    async def change(session: AsyncSession, n: int, email: str) -> None:
        await session.execute(
            text(
                "UPDATE leads SET intent_level = :l, intent_score = :score "
                "WHERE sponsor_id = :s AND email = :e"
            ),
            {
                "s": sponsor_id,
                "e": email,
                "l": rng.choice(["hot", "cold", None]),
                "score": rng.randint(0, 100),
            },
        )

    await churn(
        sessions,
        sponsor_id,
        stop,
        rng,
        lambda: f"churn{rng.randint(0, 40)}@churn.example",
        ["add", "add", "change", "suppress", "lift", "delete"],
        {"add": add, "change": change},
    )


async def test_every_reader_agrees_while_leads_and_suppressions_change(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sponsor_id = f"sp-churn-{uuid.uuid4().hex[:8]}"
    async with sessions.begin() as session:
        await session.execute(
            insert(Sponsor).values(id=sponsor_id, name="Churn", from_email="c@sponsor.example")
        )
    audiences: list[tuple[str, Any]] = [
        ("all", None),
        ("hot", None),
        ("custom", {"field": "intent_score", "op": "gte", "value": 40}),
        (
            "custom",
            {
                "any": [
                    {"field": "intent_level", "op": "eq", "value": "cold"},
                    {"not": {"field": "intent_score", "op": "lt", "value": 70}},
                ]
            },
        ),
    ]
    stop = asyncio.Event()
    writer = asyncio.create_task(_churn(sessions, sponsor_id, stop))
    try:
        for _round in range(15):
            for audience_type, raw in audiences:
                # One snapshot for every reader: what they must agree on.
                async with sessions() as session:
                    await session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ"}
                    )
                    counts = await _everywhere(session, sponsor_id, audience_type, raw)
                assert len(set(counts.values())) == 1, (audience_type, raw, counts)
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await writer


# ---------------------------------------------------------------- the estimate's bound


def _random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A random filter over the columns the tallies do not keep, so the leads are read."""
    if depth < 2 and rng.random() < 0.4:
        kind = rng.choice(["all", "any", "not"])
        if kind == "not":
            return {"not": _random_filter(rng, depth + 1)}
        return {kind: [_random_filter(rng, depth + 1) for _ in range(rng.randint(2, 3))]}
    return rng.choice(
        [
            {"field": "intent_score", "op": "gte", "value": rng.randint(0, 100)},
            {"field": "intent_score", "op": "between", "value": sorted(rng.sample(range(101), 2))},
            {
                "field": "tags",
                "op": "contains_any",
                "value": rng.sample(["vip", "smb", "partner"], 1),
            },
            {"field": "tags", "op": "contains_all", "value": ["vip", "enterprise"]},
            {"field": "company", "op": "ilike", "value": rng.choice(["acme%", "%o%", "glob%"])},
            {"field": "title", "op": "exists"},
            {"field": "attributes.size", "op": "gte", "value": rng.choice([5, 50, 500])},
            {"field": "attributes.region", "op": "eq", "value": rng.choice(["EU", "US"])},
            {"field": "created_at", "op": "lt", "value": f"2026-01-{rng.randint(2, 28):02d}"},
        ]
    )


async def test_the_estimate_holds_the_true_count_within_its_bound_at_its_confidence(
    sessions: async_sessionmaker[AsyncSession],
    audience: Audience,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sponsor_id, reachable = audience
    # Few draws for a small audience: a real estimate, not a census.
    monkeypatch.setattr(repository, "ESTIMATE_DRAWS", 120)
    monkeypatch.setattr(repository, "_draws", random.Random(20261206))
    rng = random.Random(42)
    trials, held, confidence = 400, 0, 0.0
    async with sessions() as session:
        for _ in range(trials):
            raw = _random_filter(rng)
            truth = sum(evaluate(raw, row) for row in reachable)
            guess = await repository.estimate_audience(
                session, sponsor_id, audience_criterion("custom", raw)
            )
            held += abs(guess.count - truth) <= guess.error_bound
            confidence = guess.confidence
    # At the stated rate, give or take three standard deviations of a binomial share.
    slack = 3 * (confidence * (1 - confidence) / trials) ** 0.5
    assert held / trials >= confidence - slack, (held, trials)


async def test_an_estimate_of_an_unknown_sponsor_is_zero_without_doubt(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        guess = await repository.estimate_audience(session, "no-such-sponsor", None)
    assert (guess.count, guess.error_bound) == (0, 0)
