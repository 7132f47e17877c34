"""The campaign lifecycle table (``service.campaigns.lifecycle``), pair by pair."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from schemas import http
from service.campaigns import lifecycle
from service.campaigns.lifecycle import Action, CampaignStatus
from service.errors import Conflict, InvalidTransition

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
    (S.PAUSED, A.RESUME): S.SENDING,
    (S.PAUSED, A.RESUME_PLANNING): S.QUEUED,
    (S.PAUSED, A.RESUME_SCHEDULE): S.SCHEDULED,
    (S.DRAFT, A.CANCEL): S.CANCELLED,
    (S.SCHEDULED, A.CANCEL): S.CANCELLED,
    (S.QUEUED, A.CANCEL): S.CANCELLED,
    (S.SENDING, A.CANCEL): S.CANCELLED,
    (S.PAUSED, A.CANCEL): S.CANCELLED,
    (S.SENDING, A.RETRY_FAILED): S.SENDING,
    (S.PAUSED, A.RETRY_FAILED): S.SENDING,
    (S.SENT, A.RETRY_FAILED): S.SENDING,
    (S.DRAFT, A.DELETE): None,
    (S.SCHEDULED, A.START): S.QUEUED,
    (S.QUEUED, A.PLAN): S.SENDING,
    (S.QUEUED, A.PLAN_EMPTY): S.SENT,
    (S.QUEUED, A.FAIL): S.FAILED,
    (S.SENDING, A.FINISH): S.SENT,
    (S.QUEUED, A.AUTO_PAUSE): S.PAUSED,
    (S.SENDING, A.AUTO_PAUSE): S.PAUSED,
    (S.QUEUED, A.REDRIVE): S.QUEUED,
    (S.SENDING, A.REDRIVE): S.SENDING,
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
    assert lifecycle.sources(Action.AUTO_PAUSE) == (S.QUEUED, S.SENDING)
    assert lifecycle.moves(Action.REDRIVE) == {S.QUEUED: S.QUEUED, S.SENDING: S.SENDING}
    assert lifecycle.moves(Action.DELETE) == {}


def test_the_api_schema_lists_exactly_the_lifecycle_statuses() -> None:
    assert set(get_args(http.CampaignStatus)) == {status.value for status in CampaignStatus}
