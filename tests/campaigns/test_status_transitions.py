"""The campaign lifecycle table (``service.campaigns.lifecycle``), pair by pair."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import get_args

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas import http
from service.campaigns import lifecycle, repository
from service.campaigns.lifecycle import Action, CampaignStatus
from service.errors import Conflict, InvalidTransition
from service.models import Campaign
from tests import factories
from tests.conftest import TokenFactory

S = CampaignStatus
A = Action

# The lifecycle as docs/lifecycle.md writes it; every pair not here is refused.
ALLOWED: dict[tuple[CampaignStatus, Action], CampaignStatus | None] = {
    (S.DRAFT, A.SEND): S.QUEUED,
    (S.SCHEDULED, A.SEND): S.QUEUED,
    (S.DRAFT, A.SCHEDULE): S.SCHEDULED,
    (S.SCHEDULED, A.SCHEDULE): S.SCHEDULED,
    (S.SCHEDULED, A.PAUSE): S.PAUSED,
    (S.QUEUED, A.PAUSE): S.PAUSED,
    (S.SENDING, A.PAUSE): S.PAUSED,
    (S.TESTING, A.PAUSE): S.PAUSED,
    (S.WAITING_FOR_WINNER, A.PAUSE): S.PAUSED,
    (S.PAUSED, A.RESUME): S.SENDING,
    (S.PAUSED, A.RESUME_TEST): S.TESTING,
    (S.PAUSED, A.RESUME_CHOOSING): S.WAITING_FOR_WINNER,
    (S.PAUSED, A.RESUME_PLANNING): S.QUEUED,
    (S.PAUSED, A.RESUME_SCHEDULE): S.SCHEDULED,
    (S.DRAFT, A.CANCEL): S.CANCELLED,
    (S.SCHEDULED, A.CANCEL): S.CANCELLED,
    (S.QUEUED, A.CANCEL): S.CANCELLED,
    (S.SENDING, A.CANCEL): S.CANCELLED,
    (S.TESTING, A.CANCEL): S.CANCELLED,
    (S.WAITING_FOR_WINNER, A.CANCEL): S.CANCELLED,
    (S.PAUSED, A.CANCEL): S.CANCELLED,
    (S.SENDING, A.RETRY_FAILED): S.SENDING,
    (S.PAUSED, A.RETRY_FAILED): S.SENDING,
    (S.SENT, A.RETRY_FAILED): S.SENDING,
    (S.DRAFT, A.DELETE): None,
    (S.SCHEDULED, A.START): S.QUEUED,
    (S.QUEUED, A.PLAN): S.SENDING,
    (S.QUEUED, A.PLAN_TEST): S.TESTING,
    (S.QUEUED, A.PLAN_EMPTY): S.SENT,
    (S.QUEUED, A.FAIL): S.FAILED,
    (S.SENDING, A.FINISH): S.SENT,
    (S.TESTING, A.FINISH): S.WAITING_FOR_WINNER,
    (S.TESTING, A.CHOOSE): S.SENDING,
    (S.WAITING_FOR_WINNER, A.CHOOSE): S.SENDING,
    (S.QUEUED, A.AUTO_PAUSE): S.PAUSED,
    (S.SENDING, A.AUTO_PAUSE): S.PAUSED,
    (S.TESTING, A.AUTO_PAUSE): S.PAUSED,
    (S.WAITING_FOR_WINNER, A.AUTO_PAUSE): S.PAUSED,
    (S.QUEUED, A.REDRIVE): S.QUEUED,
    (S.SENDING, A.REDRIVE): S.SENDING,
    (S.TESTING, A.REDRIVE): S.TESTING,
}

EVERY_PAIR = list(itertools.product(CampaignStatus, Action))


@pytest.mark.parametrize(("status", "action"), EVERY_PAIR, ids=lambda v: str(v))
def test_every_status_and_action_pair_leads_where_the_table_says_or_is_refused(
    status: CampaignStatus, action: Action
) -> None:
    if (status, action) in ALLOWED:
        assert lifecycle.next_status(status, action) == ALLOWED[(status, action)]
        lifecycle.require(status.value, action)  # a bare string from the database
        return
    with pytest.raises(InvalidTransition) as refused:
        lifecycle.next_status(status.value, action)
    assert isinstance(refused.value, Conflict)  # a 409 at the API
    assert refused.value.code == "invalid_transition"
    assert str(status) in refused.value.message
    assert action.replace("_", " ") in refused.value.message


def test_the_module_allows_no_pair_the_table_leaves_out() -> None:
    assert dict(lifecycle.TRANSITIONS) == ALLOWED


def test_a_status_the_lifecycle_does_not_know_is_refused_not_crashed_on() -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.next_status("archived", Action.SEND)


def test_bulk_sources_come_from_the_table() -> None:
    assert lifecycle.sources(Action.AUTO_PAUSE) == (
        S.QUEUED,
        S.TESTING,
        S.WAITING_FOR_WINNER,
        S.SENDING,
    )
    assert lifecycle.moves(Action.REDRIVE) == {
        S.QUEUED: S.QUEUED,
        S.TESTING: S.TESTING,
        S.SENDING: S.SENDING,
    }
    assert lifecycle.moves(Action.DELETE) == {}


def test_the_api_schema_lists_exactly_the_lifecycle_statuses() -> None:
    assert set(get_args(http.CampaignStatus)) == {status.value for status in CampaignStatus}


# ------------------------------------------------------- through the API and the database


async def test_pausing_a_draft_is_409_naming_the_status_and_the_allowed_ones(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    headers = token(sponsor)
    draft = await factories.draft(client, sponsor, headers)

    answer = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}/pause", headers=headers
    )

    assert answer.status_code == 409
    assert answer.json()["error"] == {
        "code": "invalid_transition",
        "message": "cannot pause a campaign that is draft "
        "(only from scheduled, queued, testing, waiting_for_winner, sending)",
        "field": "status",
    }


async def test_a_scheduled_campaign_paused_by_its_user_resumes_to_scheduled(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    headers = token(sponsor)
    base = f"/api/v1/sponsors/{sponsor}/campaigns"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    created = (
        await client.post(base, headers=headers, json=factories.campaign(send_at=later))
    ).json()

    paused = await client.post(f"{base}/{created['id']}/pause", headers=headers)
    resumed = await client.post(f"{base}/{created['id']}/resume", headers=headers)

    assert (paused.json()["status"], paused.json()["status_reason"]) == ("paused", "paused by user")
    assert (resumed.status_code, resumed.json()["status"]) == (202, "scheduled")
    assert resumed.json()["status_reason"] is None


async def test_an_automatic_pause_leaves_a_campaign_cancelled_meanwhile_cancelled(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = token(sponsor)
    draft = await factories.draft(client, sponsor, headers)
    campaign_id = uuid.UUID(draft["id"])
    await client.post(f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}/cancel", headers=headers)

    async with sessions.begin() as session:
        paused = await repository.auto_pause(session, campaign_id, "quota")
    async with sessions() as session:
        status = await session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))

    assert not paused
    assert status == "cancelled"
