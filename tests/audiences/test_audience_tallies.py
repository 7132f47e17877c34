"""Exact live counts from ``lead_tallies``: whatever happens to a sponsor's leads —
inserts, upserts, updates, email changes, deletes, suppressions — the counts the
preview answers from the tallies equal a count of the leads themselves."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, not_, select, text, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import Executable

from service.audiences import repository
from service.audiences.filters import audience_clause, leads, suppressed_clause, suppressions
from service.leads import repository as lead_repository
from service.models import Sponsor

LEVELS = [None, "hot", "warm", "cold"]
STATUSES = ["new", "contacted", "won"]
AUDIENCES: list[tuple[str, Any]] = [
    ("all", None),
    ("hot", None),
    ("warm", None),
    ("cold", None),
    ("new", None),
    ("contacted", None),
    ("custom", {"field": "intent_level", "op": "exists", "value": False}),
    (
        "custom",
        {
            "any": [
                {"field": "intent_level", "op": "in", "value": ["hot", "cold"]},
                {"not": {"field": "follow_up_status", "op": "ne", "value": "won"}},
            ]
        },
    ),
    ("custom", {"intent_level": ["warm", "hot"], "follow_up_status": "contacted"}),
]


def _lead(rng: random.Random, sponsor_id: str, n: int) -> dict[str, Any]:
    return {
        "sponsor_id": sponsor_id,
        # A lead with no email is in no audience and in no tally.
        "email": "" if n == 0 else f"t{n}@tally.example",
        "intent_level": rng.choice(LEVELS),
        "follow_up_status": rng.choice(STATUSES),
    }


async def _counted(
    session: AsyncSession, sponsor_id: str, audience_type: str, audience_filter: Any
) -> int:
    """The reference: the leads themselves, read one by one."""
    where = (audience_clause(sponsor_id, audience_type, audience_filter), not_(suppressed_clause()))
    return int(await session.scalar(select(func.count()).select_from(leads).where(*where)) or 0)


async def _check(sessions: async_sessionmaker[AsyncSession], sponsor_id: str) -> None:
    async with sessions.begin() as session:
        for audience_type, audience_filter in AUDIENCES:
            expected = await _counted(session, sponsor_id, audience_type, audience_filter)
            answer = await repository.preview(
                session, sponsor_id, audience_type, audience_filter, exact_budget_ms=1
            )
            assert (answer.count, answer.exact) == (expected, True), (
                audience_type,
                audience_filter,
            )


async def test_tallied_counts_equal_the_leads_through_a_random_history(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    tallied: list[str] = []
    real = repository._tallied

    async def spy(session: AsyncSession, sponsor_id: str, criterion: Any) -> int:
        tallied.append(sponsor_id)
        return await real(session, sponsor_id, criterion)

    monkeypatch.setattr(repository, "_tallied", spy)
    rng = random.Random(20261202)
    sponsor_id = f"sp-tally-{uuid.uuid4().hex[:8]}"
    async with sessions.begin() as session:
        await session.execute(
            insert(Sponsor).values(id=sponsor_id, name="T", from_email="t@sponsor.example")
        )
        await session.execute(insert(leads), [_lead(rng, sponsor_id, n) for n in range(300)])
    await _check(sessions, sponsor_id)
    assert tallied, "the presets are counted from the tallies"

    next_lead = 300
    for step in range(12):
        async with sessions.begin() as session:
            # Upsert: some new leads, some existing ones with new levels and statuses.
            rows = [_lead(rng, sponsor_id, rng.randrange(next_lead + 20)) for _ in range(40)]
            rows = list({row["email"]: row for row in rows if row["email"]}.values())
            statement = upsert(leads).values(rows)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["sponsor_id", "email"],
                    set_={
                        "intent_level": statement.excluded.intent_level,
                        "follow_up_status": statement.excluded.follow_up_status,
                    },
                )
            )
            next_lead += 20
            # A plain UPDATE of many rows, an email change, and deletes.
            await session.execute(
                update(leads)
                .where(leads.c.sponsor_id == sponsor_id, leads.c.id % 7 == step % 7)
                .values(follow_up_status=rng.choice(STATUSES))
            )
            await session.execute(
                update(leads)
                .where(
                    leads.c.sponsor_id == sponsor_id, leads.c.email == f"t{step * 3}@tally.example"
                )
                .values(email=f"moved{step}@tally.example", intent_level="hot")
            )
            await session.execute(
                delete(leads).where(leads.c.sponsor_id == sponsor_id, leads.c.id % 29 == step)
            )
            # Suppressions for this sponsor and global ones, added and lifted.
            await session.execute(
                upsert(suppressions)
                .values(
                    sponsor_id=sponsor_id if step % 3 else None,
                    email=f"t{rng.randrange(next_lead)}@tally.example",
                    reason="manual",
                )
                .on_conflict_do_nothing()
            )
        if step % 4 == 3:
            async with sessions.begin() as session:
                await session.execute(
                    delete(suppressions).where(
                        suppressions.c.email.in_(
                            select(suppressions.c.email)
                            .where(suppressions.c.email.like("t%@tally.example"))
                            .limit(1)
                            .scalar_subquery()
                        )
                    )
                )
        await _check(sessions, sponsor_id)
    assert len(tallied) > 12 * 9


async def test_compaction_folds_the_rows_and_keeps_the_sums(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    sponsor_id = f"sp-tally-{uuid.uuid4().hex[:8]}"
    async with sessions.begin() as session:
        await session.execute(
            insert(Sponsor).values(id=sponsor_id, name="T", from_email="t@sponsor.example")
        )
    for n in range(60):  # one statement, so at least one tally row, per lead
        async with sessions.begin() as session:
            await session.execute(insert(leads).values(_lead(rng, sponsor_id, n)))
    rows = text("SELECT count(*) FROM lead_tallies WHERE sponsor_id = :s")
    async with sessions() as session:
        before = await session.scalar(rows, {"s": sponsor_id})
    assert before is not None and before >= 59
    monkeypatch.setattr(repository, "COMPACT_ABOVE", 10)
    await _check(sessions, sponsor_id)  # counts, and compacts on the way
    async with sessions() as session:
        after = await session.scalar(rows, {"s": sponsor_id})
    # One row per group, suppressed or not.
    assert after is not None and after <= len(LEVELS) * len(STATUSES) * 2 < before
    await _check(sessions, sponsor_id)


async def _waiting_for_a_lock(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Returns once some backend waits for a lock (the gate), or after 5 s."""
    for _ in range(100):
        async with sessions() as session:
            if await session.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
                return
        await asyncio.sleep(0.05)


async def _suppress(
    sessions: async_sessionmaker[AsyncSession], sponsor_id: str | None, email: str
) -> None:
    async with sessions.begin() as session:
        await session.execute(
            insert(suppressions).values(sponsor_id=sponsor_id, email=email, reason="manual")
        )


@pytest.mark.parametrize("scope", ["sponsor", "global"])
@pytest.mark.parametrize("lead_write", ["insert", "update", "email change"])
@pytest.mark.parametrize("first", ["lead", "suppression"])
async def test_a_lead_and_a_suppression_written_at_once_never_miss_each_other(
    sessions: async_sessionmaker[AsyncSession], scope: str, lead_write: str, first: str
) -> None:
    """Two open transactions, one writing a lead, one suppressing its address:
    whichever commits first, the tallies count the lead on the right side."""
    sponsor_id = f"sp-race-{uuid.uuid4().hex[:8]}"
    address = f"race-{uuid.uuid4().hex[:8]}@tally.example"
    original = address if lead_write == "update" else f"old-{address}"
    async with sessions.begin() as session:
        await session.execute(
            insert(Sponsor).values(id=sponsor_id, name="T", from_email="t@sponsor.example")
        )
        # Enough leads at both levels that the preview counts from the tallies.
        await session.execute(
            insert(leads),
            [
                {"sponsor_id": sponsor_id, "email": f"{level}{n}-{address}", "intent_level": level}
                for level in ("hot", "cold")
                for n in range(repository.SAMPLE_SIZE + 2)
            ],
        )
        if lead_write != "insert":
            await session.execute(
                insert(leads).values(sponsor_id=sponsor_id, email=original, intent_level="cold")
            )
    write: Executable
    if lead_write == "insert":
        write = insert(leads).values(sponsor_id=sponsor_id, email=address, intent_level="hot")
    else:
        write = (
            update(leads)
            .where(leads.c.sponsor_id == sponsor_id, leads.c.email == original)
            .values(email=address, intent_level="hot")
        )
    suppression_scope = sponsor_id if scope == "sponsor" else None

    async with sessions() as lead_session:
        if first == "lead":
            await lead_session.execute(write)
            suppressing = asyncio.create_task(_suppress(sessions, suppression_scope, address))
            await _waiting_for_a_lock(sessions)
            await lead_session.commit()
            await suppressing
        else:
            async with sessions() as suppression_session:
                await suppression_session.execute(
                    insert(suppressions).values(
                        sponsor_id=suppression_scope, email=address, reason="manual"
                    )
                )
                writing = asyncio.create_task(lead_session.execute(write))
                await _waiting_for_a_lock(sessions)
                await suppression_session.commit()
            await writing
            await lead_session.commit()
    await _check(sessions, sponsor_id)


async def test_one_statement_of_many_leads_tallies_each_on_its_side_of_the_suppressions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Statements of many rows, across two sponsors, whose addresses are
    suppressed for one sponsor, for the other, globally or not at all: each
    lead is tallied on its own side after every statement."""
    rng = random.Random(24)
    sponsor_ids = [f"sp-many-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    async with sessions.begin() as session:
        for sponsor_id in sponsor_ids:
            await session.execute(
                insert(Sponsor).values(id=sponsor_id, name="T", from_email="t@sponsor.example")
            )
        # Suppressed before the leads exist: for the first sponsor, the second, everywhere.
        await session.execute(
            insert(suppressions),
            [
                {"sponsor_id": scope, "email": f"m{n}@many.example", "reason": "manual"}
                for n, scope in ((n, [*sponsor_ids, None][n % 3]) for n in range(0, 600, 5))
            ],
        )
    rows = [
        {**_lead(rng, sponsor_id, n), "email": f"m{n}@many.example" if n else ""}
        for sponsor_id in sponsor_ids
        for n in range(600)
    ]
    statements: list[Executable] = [
        insert(leads).values(rows),
        # Addresses move in and out of the suppressed ones, levels change.
        update(leads)
        .where(leads.c.sponsor_id.in_(sponsor_ids), leads.c.id % 3 == 0)
        .values(email=func.replace(leads.c.email, "m", "n"), intent_level="hot"),
        update(leads)
        .where(leads.c.sponsor_id.in_(sponsor_ids), leads.c.email.like("n%"))
        .values(email=func.replace(leads.c.email, "n", "m"), follow_up_status="won"),
        delete(leads).where(leads.c.sponsor_id.in_(sponsor_ids), leads.c.id % 4 == 0),
    ]
    for statement in statements:
        async with sessions.begin() as session:
            changed = await session.execute(statement)
            assert changed.rowcount > 100  # type: ignore[attr-defined]
        for sponsor_id in sponsor_ids:
            await _check(sessions, sponsor_id)


async def test_an_import_chunk_and_a_suppression_of_one_of_its_addresses_never_miss_each_other(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A bulk upsert of many leads (the import's path) open while an address it
    writes is suppressed: the suppression waits for the import, and the lead is
    tallied as suppressed."""
    sponsor_id = f"sp-race-{uuid.uuid4().hex[:8]}"
    async with sessions.begin() as session:
        await session.execute(
            insert(Sponsor).values(id=sponsor_id, name="T", from_email="t@sponsor.example")
        )
    chunk = [
        {"email": f"c{n}@chunk.example", "intent_level": "hot" if n % 2 else "cold"}
        for n in range(lead_repository.COPY_MIN_ROWS * 2)
    ]
    async with sessions() as lead_session:
        await lead_repository.upsert_many(lead_session, sponsor_id, chunk)
        suppressing = asyncio.create_task(_suppress(sessions, sponsor_id, "c7@chunk.example"))
        await _waiting_for_a_lock(sessions)
        assert not suppressing.done()
        await lead_session.commit()
        await suppressing
    await _check(sessions, sponsor_id)


async def test_leads_of_a_sponsor_that_does_not_exist_are_refused_whole_statements_at_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The foreign key's rule, checked once per statement: one lead of an unknown
    sponsor among many refuses the statement, at insert and at a sponsor change."""
    sponsor_id = f"sp-known-{uuid.uuid4().hex[:8]}"
    async with sessions.begin() as session:
        await session.execute(
            insert(Sponsor).values(id=sponsor_id, name="T", from_email="t@sponsor.example")
        )
    rows = [{"sponsor_id": sponsor_id, "email": f"k{n}@known.example"} for n in range(50)]
    async with sessions() as session:
        with pytest.raises(IntegrityError, match="sponsor that does not exist"):
            await session.execute(
                insert(leads), [*rows, {"sponsor_id": "sp-nobody", "email": "x@known.example"}]
            )
    async with sessions.begin() as session:
        await session.execute(insert(leads), rows)
    async with sessions() as session:
        with pytest.raises(IntegrityError, match="sponsor that does not exist"):
            await session.execute(
                update(leads).where(leads.c.sponsor_id == sponsor_id).values(sponsor_id="sp-nobody")
            )
    await _check(sessions, sponsor_id)


async def test_deleting_a_sponsor_deletes_its_leads_and_their_tallies(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sponsor_ids = [f"sp-gone-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    rng = random.Random(5)
    async with sessions.begin() as session:
        for sponsor_id in sponsor_ids:
            await session.execute(
                insert(Sponsor).values(id=sponsor_id, name="T", from_email="t@sponsor.example")
            )
            await session.execute(insert(leads), [_lead(rng, sponsor_id, n) for n in range(1, 40)])
    async with sessions.begin() as session:
        await session.execute(delete(Sponsor).where(Sponsor.id == sponsor_ids[0]))
    async with sessions() as session:
        left = await session.execute(
            select(leads.c.sponsor_id, func.count())
            .group_by(leads.c.sponsor_id)
            .where(leads.c.sponsor_id.in_(sponsor_ids))
        )
        assert {row[0]: row[1] for row in left} == {sponsor_ids[1]: 39}
        tallied = await session.scalar(
            text("SELECT coalesce(sum(leads), 0) FROM lead_tallies WHERE sponsor_id = :s"),
            {"s": sponsor_ids[0]},
        )
        assert tallied == 0
