"""Scheduled campaigns start on a timer (``campaign.start``), fired by the timers role.

Scheduling a campaign (creating it with a future ``send_at``, ``POST …/schedule``,
or resuming one paused before its time) sets the timer ``campaign:{id}:start``
at ``send_at`` in the same transaction; moving the schedule moves it. When it
fires (``service.campaigns.logic.start_due``), a campaign still ``scheduled``
whose time has come is queued through the lifecycle table (``Action.START``) and the planner's
event written to the outbox, in the transaction that deletes the timer: it
starts once. A campaign paused or cancelled meanwhile is left alone (a resume
before its time sets the timer again).
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Campaign
from service.timers import repository as timers

START_KIND = "campaign.start"


def _key(campaign_id: uuid.UUID) -> str:
    return f"campaign:{campaign_id}:start"


async def set_start(session: AsyncSession, campaign: Campaign) -> None:
    """The campaign's start timer at its ``send_at`` (set, or moved)."""
    assert campaign.send_at is not None  # a scheduled campaign has one
    payload = {"campaign_id": str(campaign.id)}
    await timers.schedule(session, START_KIND, _key(campaign.id), campaign.send_at, payload)
