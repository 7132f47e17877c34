"""Lead sync of a large batch, set-based: the same end state as event by event."""

from __future__ import annotations

import random
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.leads import LeadDeleted, LeadUpserted
from service.leads import logic
from service.models import Lead
from tests.audiences.test_lead_sync import deleted, upserted
from tests.conftest import create_sponsor


def _history(rng: random.Random, sponsor: str, leads: int) -> list[LeadUpserted | LeadDeleted]:
    """Shuffled events for a few addresses each: upserts and deletions at random
    minutes, some at the same minute, some delivered twice, a few invalid."""
    events: list[LeadUpserted | LeadDeleted] = []
    for n in range(leads):
        email = f"Sync{n}@Example.com" if n % 2 else f"sync{n}@example.com"
        for _ in range(rng.randint(1, 5)):
            minute = rng.randint(0, 8)
            if rng.random() < 0.25:
                events.append(deleted(sponsor, email, minute))
            else:
                events.append(upserted(sponsor, email, minute, name=f"n{n}-{minute}-{len(events)}"))
    events += rng.sample(events, len(events) // 5)
    events.append(upserted(sponsor, "not an address", 1))
    events.append(upserted("no-such-sponsor", "x@example.com", 1))
    rng.shuffle(events)
    return events


def _for(sponsor: str, events: list[LeadUpserted | LeadDeleted]) -> list[Any]:
    return [
        e.model_copy(update={"sponsor_id": sponsor}) if e.sponsor_id != "no-such-sponsor" else e
        for e in events
    ]


async def _state(session: AsyncSession, sponsor: str) -> tuple[Any, Any]:
    leads = (
        await session.execute(
            select(Lead.email, Lead.name, Lead.source_updated_at)
            .where(Lead.sponsor_id == sponsor)
            .order_by(Lead.email)
        )
    ).all()
    tombstones = (
        await session.execute(
            text(
                "SELECT email, deleted_at FROM lead_tombstones WHERE sponsor_id = :s ORDER BY email"
            ),
            {"s": sponsor},
        )
    ).all()
    return [tuple(row) for row in leads], [tuple(row) for row in tombstones]


async def test_a_large_batch_ends_as_its_events_applied_one_by_one(
    sessions: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    admin: dict[str, str],
) -> None:
    bulk, one_by_one = await create_sponsor(client, admin), await create_sponsor(client, admin)
    rng = random.Random(7)
    for round_ in range(2):  # the second round meets the first one's leads and tombstones
        events = _history(rng, "template", 60 + 40 * round_)
        assert len(events) >= logic.SYNC_BULK_MIN_EVENTS
        async with sessions.begin() as session:
            changed = await logic.apply_events(session, _for(bulk, events))
        async with sessions.begin() as session:
            for event in _for(one_by_one, events):
                await logic.apply_event(session, event)
        async with sessions() as session:
            got, expected = await _state(session, bulk), await _state(session, one_by_one)
        assert got == expected
        assert changed > 0
    # Everything again: nothing is newer than what is stored.
    async with sessions.begin() as session:
        assert await logic.apply_events(session, _for(bulk, events)) == 0


async def test_in_a_large_batch_a_lead_changed_after_its_deletion_is_updated_in_place(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    email = "kept@example.com"
    async with sessions.begin() as session:
        await logic.apply_events(session, [upserted(sponsor, email, 1, name="one")])
    async with sessions() as session:
        before = await session.scalar(
            select(Lead.id).where(Lead.sponsor_id == sponsor, Lead.email == email)
        )
    others = [upserted(sponsor, f"o{n}@example.com", 1) for n in range(logic.SYNC_BULK_MIN_EVENTS)]
    batch: list[LeadUpserted | LeadDeleted] = [*others, deleted(sponsor, email, 3)]
    batch.append(upserted(sponsor, email, 5, name="five"))
    async with sessions.begin() as session:
        await logic.apply_events(session, batch)
    async with sessions() as session:
        lead = await session.scalar(
            select(Lead).where(Lead.sponsor_id == sponsor, Lead.email == email)
        )
    assert lead is not None and (lead.id, lead.name) == (before, "five")
