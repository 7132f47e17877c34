"""The in-memory audience index counts exactly what ``SELECT count(*)`` counts, in the
same snapshot: for any filter, with suppressions and deleted leads, while writers
change leads and suppressions, after bulk statements, and it steps aside (SQL
counts) where it cannot be exact."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from sqlalchemy import delete, func, insert, not_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.audiences import columns, live, repository
from service.audiences.columns import like_regex
from service.audiences.filter_language import parse_filter
from service.audiences.filters import audience_clause, leads, suppressed_clause
from service.models import Lead, Sponsor, Suppression
from tests.audiences.test_audience_counts import churn
from tests.audiences.test_audience_filters import _random_leads, filters


class Sponsored(tuple[str, int]):
    """(sponsor id, number of leads); a short repr for Hypothesis' reports."""

    def __repr__(self) -> str:
        return f"Sponsored({self[0]!r})"


async def _sponsor_with_leads(
    sessions: async_sessionmaker[AsyncSession], prefix: str, count: int, seed: int
) -> str:
    sponsor_id = f"sp-{prefix}-{uuid.uuid4().hex[:8]}"
    rows = [
        {**row, "email": row["email"].replace("@prop.example", f"@{prefix}.example")}
        for row in _random_leads(count, seed=seed)
    ]
    rng = random.Random(seed)
    async with sessions.begin() as session:
        await session.execute(
            insert(Sponsor).values(id=sponsor_id, name="Index", from_email="i@sponsor.example")
        )
        await session.execute(insert(Lead), [{**row, "sponsor_id": sponsor_id} for row in rows])
        await session.execute(
            insert(Suppression),
            [
                {
                    "sponsor_id": rng.choice([sponsor_id, None]),
                    "email": r["email"],
                    "reason": "manual",
                }
                for r in rng.sample(rows, count // 8)
            ],
        )
        deleted = [r["email"] for r in rng.sample(rows, count // 10)]
        await session.execute(
            delete(Lead).where(Lead.sponsor_id == sponsor_id, Lead.email.in_(deleted))
        )
    return sponsor_id


async def _plain_count(session: AsyncSession, sponsor_id: str, raw: Any) -> int:
    query = (
        select(func.count())
        .select_from(leads)
        .where(audience_clause(sponsor_id, "custom", raw), not_(suppressed_clause()))
    )
    return int(await session.scalar(query) or 0)


@pytest.fixture(scope="module")
async def indexed(sessions: async_sessionmaker[AsyncSession]) -> Sponsored:
    return Sponsored((await _sponsor_with_leads(sessions, "index", 160, seed=11), 160))


@hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=filters)
async def test_the_index_answers_every_filter_of_the_language_as_select_count_does(
    raw: dict[str, Any], sessions: async_sessionmaker[AsyncSession], indexed: Sponsored
) -> None:
    sponsor_id = indexed[0]
    async with sessions() as session:
        counted = await live.count(session, sponsor_id, parse_filter(raw))
        assert counted == await _plain_count(session, sponsor_id, raw)


@pytest.fixture(scope="module")
async def indexed_wide(sessions: async_sessionmaker[AsyncSession]) -> Sponsored:
    return Sponsored((await _sponsor_with_leads(sessions, "index-wide", 160, seed=12), 160))


@hypothesis_settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=filters)
async def test_columns_past_the_distinct_cap_count_as_select_count_does_or_step_aside(
    raw: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
    indexed_wide: Sponsored,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the cap at 3, every column of texts is kept as joined text (equality a
    search, ``ilike`` a regex); any other column of more values steps aside."""
    monkeypatch.setattr(columns, "DISTINCT_CAP", 3)  # before this sponsor's index is built
    sponsor_id = indexed_wide[0]
    async with sessions() as session:
        counted = await live.count(session, sponsor_id, parse_filter(raw))
        if counted is not None:
            assert counted == await _plain_count(session, sponsor_id, raw)


_CHURN_FILTERS: list[dict[str, Any]] = [
    {"field": "intent_score", "op": "gte", "value": 40},
    {
        "all": [
            {"field": "tags", "op": "contains_any", "value": ["vip"]},
            {"not": {"field": "title", "op": "eq", "value": "CTO"}},
        ]
    },
    {
        "any": [
            {"field": "attributes.region", "op": "eq", "value": "EU"},
            {"field": "created_at", "op": "lt", "value": "2026-01-10"},
        ]
    },
]


async def _churn(
    sessions: async_sessionmaker[AsyncSession], sponsor_id: str, stop: asyncio.Event
) -> None:
    """Single and bulk writes of leads and suppressions, one commit each, until told to stop."""
    rng = random.Random(5)

    async def add(session: AsyncSession, n: int, email: str) -> None:
        row = _random_leads(1, seed=n)[0] | {"email": email, "sponsor_id": sponsor_id}
        exists = select(Lead.id).where(Lead.sponsor_id == sponsor_id, Lead.email == email)
        if await session.scalar(exists) is None:
            await session.execute(insert(Lead).values(row))

    async def change(session: AsyncSession, n: int, email: str) -> None:
        await session.execute(
            update(Lead)
            .where(Lead.sponsor_id == sponsor_id, Lead.email == email)
            .values(intent_score=rng.randint(0, 100), tags=rng.sample(["vip", "smb"], 1))
        )

    async def bulk(session: AsyncSession, n: int, email: str) -> None:  # one statement, many
        await session.execute(
            text(
                "UPDATE leads SET intent_score = (intent_score + 7) % 101, "
                "attributes = attributes || jsonb_build_object('region', 'EU') "
                "WHERE sponsor_id = :s AND id % 5 = :r"
            ),
            {"s": sponsor_id, "r": rng.randint(0, 4)},
        )

    await churn(
        sessions,
        sponsor_id,
        stop,
        rng,
        lambda: f"p{rng.randint(0, 200)}@churn-index.example",
        ["add", "change", "bulk", "suppress", "lift", "delete"],
        {"add": add, "change": change, "bulk": bulk},
    )


async def test_the_index_stays_exact_while_leads_and_suppressions_change(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small overlay: the churn also crosses the rebuild.
    monkeypatch.setattr(live, "OVERLAY_LIMIT", 60)
    sponsor_id = await _sponsor_with_leads(sessions, "churn-index", 200, seed=3)
    stop = asyncio.Event()
    writer = asyncio.create_task(_churn(sessions, sponsor_id, stop))
    answered = 0
    try:
        for _round in range(25):
            for raw in _CHURN_FILTERS:
                async with sessions() as session:
                    await session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ"}
                    )
                    counted = await live.count(session, sponsor_id, parse_filter(raw))
                    plain = await _plain_count(session, sponsor_id, raw)
                assert counted is None or counted == plain, (raw, counted, plain)
                answered += counted is not None
            await asyncio.sleep(0.005)
    finally:
        stop.set()
        await writer
    # Each later transaction sees all an earlier one saw: the index answers them all.
    assert answered == 25 * len(_CHURN_FILTERS)


async def test_a_transaction_that_wrote_leads_is_counted_in_sql_and_leaves_the_index_as_it_was(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sponsor_id = await _sponsor_with_leads(sessions, "writer-index", 40, seed=8)
    raw = {"field": "intent_score", "op": "gte", "value": 0}
    async with sessions() as session:
        before = await live.count(session, sponsor_id, parse_filter(raw))
    assert before is not None
    async with sessions() as session:
        await session.execute(
            insert(Lead).values(sponsor_id=sponsor_id, email="new@writer.example", intent_score=9)
        )
        assert await live.count(session, sponsor_id, parse_filter(raw)) is None
        answer = await repository.preview(session, sponsor_id, "custom", raw)
        assert answer.count == await _plain_count(session, sponsor_id, raw) == before + 1
        await session.rollback()
    async with sessions() as session:
        assert await live.count(session, sponsor_id, parse_filter(raw)) == before


async def test_ilike_beyond_ascii_is_left_to_sql_and_still_exact(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sponsor_id = await _sponsor_with_leads(sessions, "ascii-index", 30, seed=9)
    async with sessions.begin() as session:
        await session.execute(
            insert(Lead).values(
                sponsor_id=sponsor_id, email="u@ascii.example", company="Ünter GmbH"
            )
        )
    raw = {"field": "company", "op": "ilike", "value": "%gmbh"}
    async with sessions() as session:
        assert await live.count(session, sponsor_id, parse_filter(raw)) is None
        answer = await repository.preview(session, sponsor_id, "custom", raw, exact_budget_ms=0)
        assert (answer.count, answer.exact) == (await _plain_count(session, sponsor_id, raw), True)


def test_ilike_patterns_read_as_postgresql_reads_them() -> None:
    cases = {
        ("acme%", "ACME Corp"): True,
        ("a_me", "acme"): True,
        ("a_me", "acmee"): False,
        ("100\\%", "100%"): True,
        ("100\\%", "1000"): False,
        ("%.%", "a.b"): True,
        ("%.%", "ab"): False,
        ("a\\_b", "a_b"): True,
        ("a\\_b", "axb"): False,
    }
    for (pattern, value), expected in cases.items():
        regex = like_regex(pattern)
        assert regex is not None
        assert bool(regex.fullmatch("\0" + value)) is expected, (pattern, value)
        # Within one text of a joined column: a wildcard never reaches the next one.
        found = columns.Joined({"x": [1], value: [2], "acme y": [3]}, lambda v: v).like(regex)
        assert (2 in found) is expected, (pattern, value, found)
    assert like_regex("trailing\\") is None
    assert like_regex("ünter%") is None


async def test_a_column_of_many_distinct_values_is_counted_by_the_index(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Equality and ``ilike`` read every distinct value at once (a lookup, one regex
    search over them all), however many there are."""
    sponsor_id = await _sponsor_with_leads(sessions, "wide", 20, seed=5)
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO leads (sponsor_id, email, company, attributes) "
                "SELECT :s, 'w' || n || '@wide.example', "
                "'Company ' || n || chr(10) || CASE WHEN n % 3 = 0 THEN 'Inc' ELSE 'Ltd' END, "
                "jsonb_build_object('code', 'C-' || n) FROM generate_series(1, 25000) AS n"
            ),
            {"s": sponsor_id},
        )
    counted = [
        {"field": "company", "op": "eq", "value": "Company 13\nLtd"},
        {"field": "company", "op": "ilike", "value": "company 1%"},
        {"field": "company", "op": "ilike", "value": "%inc"},
        {"field": "company", "op": "ilike", "value": "%7_ltd"},
        {"field": "attributes.code", "op": "ilike", "value": "c-1_"},
        {"field": "attributes.code", "op": "in", "value": ["C-3", "C-4", "nope"]},
    ]
    async with sessions() as session:
        for raw in counted:
            expected = await _plain_count(session, sponsor_id, raw)
            assert expected > 0, raw
            assert await live.count(session, sponsor_id, parse_filter(raw)) == expected, raw


async def test_a_preview_from_the_index_samples_reachable_leads_of_the_audience(
    sessions: async_sessionmaker[AsyncSession], indexed: Sponsored
) -> None:
    sponsor_id = indexed[0]
    raw = {
        "any": [
            {"field": "intent_score", "op": "gte", "value": 30},
            {"field": "tags", "op": "exists"},
        ]
    }
    async with sessions() as session:
        assert await live.count(session, sponsor_id, parse_filter(raw)) is not None
        answer = await repository.preview(session, sponsor_id, "custom", raw, exact_budget_ms=0)
        reachable = set(
            (
                await session.scalars(
                    select(Lead.id).where(
                        audience_clause(sponsor_id, "custom", raw), not_(suppressed_clause())
                    )
                )
            ).all()
        )
    ids = [lead.id for lead in answer.sample]
    assert (answer.count, answer.exact) == (len(reachable), True)
    assert ids == sorted(reachable)[:10]


async def test_a_first_preview_counts_in_sql_and_has_the_index_built_apart(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    sponsor_id = await _sponsor_with_leads(sessions, "apart-index", 40, seed=12)
    raw = {"field": "tags", "op": "contains_any", "value": ["vip", "smb"]}
    built_in: list[AsyncSession] = []
    build = live._build

    async def recorded(session: AsyncSession, sponsor: str) -> Any:
        built_in.append(session)
        return await build(session, sponsor)

    monkeypatch.setattr(live, "_build", recorded)
    async with sessions() as session:
        answer = await repository.preview(session, sponsor_id, "custom", raw, exact_budget_ms=0)
        assert (answer.count, answer.exact) == (await _plain_count(session, sponsor_id, raw), True)
    await asyncio.gather(*live._building.values())
    # Built once, and not in the preview's transaction.
    assert len(built_in) == 1
    assert built_in[0] is not session
    async with sessions() as session:
        # Built: answered without building again.
        assert await live.count(session, sponsor_id, parse_filter(raw), wait=False) == answer.count


def test_a_range_over_sorted_ids_takes_whole_buckets_and_the_two_partial_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(columns, "BUCKET", 4)
    rng = random.Random(3)
    pairs = [(float(rng.randint(0, 40)), lead) for lead in range(1, 200)]
    column = columns.Sorted.of_pairs(list(pairs))
    for _ in range(300):
        low, high = sorted(rng.sample(range(-2, 43), 2))
        low_open, high_open = rng.random() < 0.5, rng.random() < 0.5
        expected = {
            lead
            for value, lead in pairs
            if (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        }
        assert set(column.between(low, low_open, high, high_open)) == expected
    assert set(column.between(None, False, 10, True)) == {lead for v, lead in pairs if v < 10}


def test_a_snapshot_is_within_a_later_one_and_not_within_an_earlier_one() -> None:
    earlier = live.Snapshot.parse("100:105:101,103")
    later = live.Snapshot.parse("103:110:103,107")
    assert earlier.within(later)
    assert not later.within(earlier)
    # 101 ran for the earlier one, committed for the later one; 102 never ran for either.
    assert not live.Snapshot.parse("100:105:101").within(live.Snapshot.parse("100:105:102"))


async def test_more_changes_than_the_overlay_holds_are_counted_in_sql_while_the_index_is_rebuilt(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "OVERLAY_LIMIT", 5)
    sponsor_id = await _sponsor_with_leads(sessions, "bulk-index", 40, seed=13)
    raw = {"field": "intent_score", "op": "gte", "value": 50}
    async with sessions() as session:
        assert await live.count(session, sponsor_id, parse_filter(raw)) is not None
    async with sessions.begin() as session:
        await session.execute(
            update(Lead).where(Lead.sponsor_id == sponsor_id).values(intent_score=60)
        )
    async with sessions() as session:
        assert await live.count(session, sponsor_id, parse_filter(raw), wait=False) is None
        answer = await repository.preview(session, sponsor_id, "custom", raw, exact_budget_ms=0)
        plain = await _plain_count(session, sponsor_id, raw)
    await asyncio.gather(*live._building.values())
    async with sessions() as session:
        assert (answer.count, answer.exact) == (plain, True)
        assert await live.count(session, sponsor_id, parse_filter(raw), wait=False) == plain
