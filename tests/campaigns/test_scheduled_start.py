"""Scheduled campaigns start on a ``campaign.start`` timer, not by polling campaigns.

Scheduling sets the timer at ``send_at``, moving the schedule moves it; when it
fires (called here as the timers role calls it), a campaign still scheduled is
queued once through the lifecycle table, and one paused meanwhile is left alone
until a resume sets the timer again. The whole way (the real timers role on the
session's workers) is ``tests/sending/test_sending.py``'s scheduled campaign.
"""

from __future__ import annotations

import importlib.util
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.campaigns import logic, scheduler
from service.campaigns.lifecycle import CampaignStatus
from service.models import Campaign
from service.timers.logic import BatchHandler, fire_due
from tests import factories
from tests.conftest import TokenFactory

HANDLERS = {scheduler.START_KIND: BatchHandler(logic.start_due)}


def base(sponsor: str) -> str:
    return f"/api/v1/sponsors/{sponsor}/campaigns"


async def start_timer(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> Any:
    async with sessions() as session:
        return await session.scalar(
            text("SELECT due_at FROM timers WHERE key = :k"), {"k": f"campaign:{campaign_id}:start"}
        )


async def status(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> str:
    async with sessions() as session:
        found = await session.scalar(
            select(Campaign.status).where(Campaign.id == uuid.UUID(campaign_id))
        )
    return str(found)


async def fire_at(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> None:
    """The campaign's start timer, due now, fired as the timers role fires it.

    The campaign and its timer are made due in one transaction: the session's own
    timers role may fire the timer first, and must then see the campaign due too
    (either firing has the same effect).
    """
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE campaigns SET send_at = now() - interval '1 second' WHERE id = :c"),
            {"c": uuid.UUID(campaign_id)},
        )
        await session.execute(
            text("UPDATE timers SET due_at = now() - interval '1 second' WHERE key = :k"),
            {"k": f"campaign:{campaign_id}:start"},
        )
    async with sessions.begin() as session:
        await fire_due(session, HANDLERS, limit=1000)


async def test_scheduling_sets_a_start_timer_at_send_at_and_moving_the_schedule_moves_it(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = token(sponsor)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    created = await client.post(
        base(sponsor), headers=headers, json=factories.campaign(send_at=tomorrow.isoformat())
    )
    campaign_id = created.json()["id"]
    assert await start_timer(sessions, campaign_id) == tomorrow

    later = tomorrow + timedelta(days=2)
    moved = await client.post(
        f"{base(sponsor)}/{campaign_id}/schedule",
        headers=headers,
        json={"send_at": later.isoformat()},
    )
    assert moved.status_code == 200, moved.text
    assert await start_timer(sessions, campaign_id) == later

    draft = await client.post(base(sponsor), headers=headers, json=factories.campaign(draft=True))
    assert await start_timer(sessions, draft.json()["id"]) is None


async def test_a_due_start_timer_queues_the_scheduled_campaign_once(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    created = await client.post(
        base(sponsor), headers=token(sponsor), json=factories.campaign(send_at=later)
    )
    campaign_id = created.json()["id"]

    await fire_at(sessions, campaign_id)

    assert await status(sessions, campaign_id) == CampaignStatus.QUEUED
    assert await start_timer(sessions, campaign_id) is None
    async with sessions() as session:
        queued_at = await session.scalar(
            select(Campaign.queued_at).where(Campaign.id == uuid.UUID(campaign_id))
        )
    assert queued_at is not None


async def test_a_start_timer_leaves_a_paused_campaign_alone_until_a_resume_sets_it_again(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = token(sponsor)
    later = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    created = await client.post(
        base(sponsor), headers=headers, json=factories.campaign(send_at=later.isoformat())
    )
    campaign_id = created.json()["id"]
    await client.post(f"{base(sponsor)}/{campaign_id}/pause", headers=headers)

    await fire_at(sessions, campaign_id)
    assert await status(sessions, campaign_id) == CampaignStatus.PAUSED
    assert await start_timer(sessions, campaign_id) is None  # fired, to no effect

    async with sessions.begin() as session:  # paused before its time, which is still ahead
        await session.execute(
            text("UPDATE campaigns SET send_at = :at WHERE id = :c"),
            {"at": later, "c": uuid.UUID(campaign_id)},
        )
    resumed = await client.post(f"{base(sponsor)}/{campaign_id}/resume", headers=headers)
    assert resumed.json()["status"] == CampaignStatus.SCHEDULED
    assert await start_timer(sessions, campaign_id) == later


def _migration_statement() -> str:
    """The migration's statement that gives already scheduled campaigns their timers."""
    versions = Path(__file__).resolve().parents[2] / "migrations" / "versions"
    (path,) = [p for p in versions.glob("*.py") if "SCHEDULED_TIMERS =" in p.read_text()]
    spec = importlib.util.spec_from_file_location("scheduled_timers_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.SCHEDULED_TIMERS)


async def test_the_migration_gives_a_campaign_scheduled_before_it_its_start_timer(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = token(sponsor)
    later = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    created = await client.post(
        base(sponsor), headers=headers, json=factories.campaign(send_at=later.isoformat())
    )
    campaign_id = created.json()["id"]
    async with sessions.begin() as session:  # as a campaign scheduled by the release before
        await session.execute(
            text("DELETE FROM timers WHERE key = :k"), {"k": f"campaign:{campaign_id}:start"}
        )

    async with sessions.begin() as session:
        await session.execute(text(_migration_statement()))
        await session.execute(text(_migration_statement()))  # a second run changes nothing

    assert await start_timer(sessions, campaign_id) == later
