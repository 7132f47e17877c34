"""The campaign lifecycle: every status a campaign can be in, and every move between them.

Every status change goes through this table, whoever makes it: the API's
actions, the planner, the sender, the timers role (scheduled starts), the relay's
reconciler, and the reputation guard. ``(status, action) → new status``; a pair that is not in the
table is refused with ``InvalidTransition`` (409 at the API). Statuses are
stored as bare strings, the values below. ``docs/lifecycle.md`` explains each
row and who may take it.

Callers that change one loaded campaign use ``apply``; SQL that changes status
in bulk or by a conditional ``UPDATE`` takes its source statuses and targets
from ``moves`` (see ``service.campaigns.repository.transition``), so the rule
lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from sqlalchemy import func

from service.errors import InvalidTransition
from service.models import Campaign


class CampaignStatus(StrEnum):
    """Where a campaign is; stored as the value (bare strings in ``campaigns.status``)."""

    DRAFT = "draft"  # being written; nothing happens until send or schedule
    SCHEDULED = "scheduled"  # waits for ``send_at``; its start timer queues it then
    QUEUED = "queued"  # the planner's event is on its way
    TESTING = "testing"  # A/B: the test share's batches go out, one variant per row
    WAITING_FOR_WINNER = "waiting_for_winner"  # A/B: test share sent; the winner is chosen
    SENDING = "sending"  # planned: batches go out (A/B: the rest gets the winner)
    PAUSED = "paused"  # by the user, the sender (quota, failures) or the reputation guard
    SENT = "sent"  # every row left ``pending`` (retry-failed may send again)
    CANCELLED = "cancelled"  # for good; pending rows became ``cancelled``
    FAILED = "failed"  # could not be planned (a stored audience filter no longer parses)


class Action(StrEnum):
    """What moves a campaign; the first group comes from the API, the rest from workers."""

    SEND = "send"
    SCHEDULE = "schedule"
    PAUSE = "pause"
    RESUME = "resume"  # paused after planning: sending again where it stopped
    RESUME_PLANNING = "resume_planning"  # paused after queueing, before planning
    RESUME_SCHEDULE = "resume_schedule"  # paused before its ``send_at``
    RESUME_TEST = "resume_test"  # A/B: paused while its test share was sending
    RESUME_CHOOSING = "resume_choosing"  # A/B: paused once its test share was sent
    CHOOSE = "choose"  # A/B: a winner chosen (timer or by hand); the rest is planned
    CANCEL = "cancel"
    RETRY_FAILED = "retry_failed"
    DELETE = "delete"
    START = "start"  # timers role: a scheduled campaign's time has come
    PLAN = "plan"  # planner: delivery rows written, batches released
    PLAN_TEST = "plan_test"  # planner: an A/B campaign's test share written, released
    PLAN_EMPTY = "plan_empty"  # planner: the audience is empty, nothing to send
    FAIL = "fail"  # planner: the campaign cannot be planned
    FINISH = "finish"  # sender or reconciler: no row is pending any more (A/B: test sent)
    AUTO_PAUSE = "auto_pause"  # sender (quota, failure rate), reputation guard
    REDRIVE = "redrive"  # reconciler: a campaign that stopped moving starts again


S = CampaignStatus
A = Action

# None as the new status: the campaign is deleted.
_TABLE: dict[tuple[CampaignStatus, Action], CampaignStatus | None] = {
    (S.DRAFT, A.SEND): S.QUEUED,
    (S.SCHEDULED, A.SEND): S.QUEUED,
    (S.DRAFT, A.SCHEDULE): S.SCHEDULED,
    (S.SCHEDULED, A.SCHEDULE): S.SCHEDULED,
    # A user may hold a scheduled campaign; the automatic guards only stop what is
    # moving (a scheduled campaign is checked again once it sends).
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
    # An A/B test share with nothing pending waits for its winner.
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

TRANSITIONS: Mapping[tuple[CampaignStatus, Action], CampaignStatus | None] = MappingProxyType(
    _TABLE
)

del S, A


def next_status(status: str, action: Action) -> CampaignStatus | None:
    """The status ``action`` leads to from ``status`` (None: deleted), or ``InvalidTransition``."""
    try:
        return TRANSITIONS[(CampaignStatus(status), action)]
    except (KeyError, ValueError):
        raise InvalidTransition(status, action, [s.value for s in sources(action)]) from None


def require(status: str, action: Action) -> None:
    """Refuse ``action`` from ``status`` (``InvalidTransition``) without changing anything."""
    next_status(status, action)


def sources(action: Action) -> tuple[CampaignStatus, ...]:
    """The statuses ``action`` is allowed from, in the enum's order."""
    return tuple(source for source in CampaignStatus if (source, action) in TRANSITIONS)


def moves(action: Action) -> dict[CampaignStatus, CampaignStatus]:
    """``source → target`` of ``action``, for a conditional ``UPDATE`` (never ``DELETE``)."""
    found = {source: TRANSITIONS[(source, action)] for source in sources(action)}
    return {source: target for source, target in found.items() if target is not None}


def apply(campaign: Campaign, action: Action, reason: str | None = None) -> CampaignStatus:
    """Move a campaign loaded by the caller (locked, so no one moves it meanwhile).

    Sets the status, its reason (cleared unless given) and ``updated_at``; the
    caller sets what else the move means (``queued_at``, ``completed_at`` …).
    """
    target = next_status(campaign.status, action)
    if target is None:
        raise ValueError(f"{action} deletes the campaign; use require() and delete it")
    campaign.status = target
    campaign.status_reason = reason
    campaign.updated_at = func.now()
    return target
