"""The SQL of watching campaigns rather than running one: the timers role's start of
scheduled campaigns, the relay's reconciler, the operator's status view and the
campaigns-per-status gauge (the provider templates left to delete are in
``template_repository``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.campaigns import lifecycle
from service.campaigns.lifecycle import Action, CampaignStatus
from service.campaigns.repository import stats
from service.models import Campaign, table_of


async def scheduled_among(
    session: AsyncSession, ids: Sequence[uuid.UUID], now: datetime
) -> list[Campaign]:
    """Of ``ids``, the campaigns still waiting to start whose ``send_at`` has come, locked
    for the caller (a campaign paused, cancelled or moved later meanwhile is not)."""
    query = (
        select(Campaign)
        .where(
            Campaign.id.in_(list(ids)),
            Campaign.status.in_(lifecycle.sources(Action.START)),
            Campaign.send_at <= now,
        )
        .order_by(Campaign.send_at)
        .with_for_update()
    )
    return list((await session.scalars(query)).all())


async def stalled(session: AsyncSession, stall_seconds: float, limit: int = 100) -> list[Campaign]:
    """Campaigns that should be moving but have not for ``stall_seconds``, locked.

    ``sending`` (or an A/B ``testing``) without progress (lost batch messages, a
    poison message, a broker that lost its data) or ``queued`` and never planned (a
    lost campaign event).
    """
    horizon = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, stall_seconds)
    query = (
        select(Campaign)
        .where(
            or_(
                and_(
                    Campaign.status.in_((CampaignStatus.SENDING, CampaignStatus.TESTING)),
                    func.coalesce(Campaign.last_progress_at, Campaign.planned_at) < horizon,
                ),
                and_(Campaign.status == CampaignStatus.QUEUED, Campaign.queued_at < horizon),
            )
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.scalars(query)).all())


_RUNNING = (
    CampaignStatus.QUEUED,
    CampaignStatus.TESTING,
    CampaignStatus.WAITING_FOR_WINNER,
    CampaignStatus.SENDING,
    CampaignStatus.PAUSED,
)


async def running_overview(session: AsyncSession, limit: int = 50) -> list[Any]:
    """Campaigns in flight (queued, A/B testing or choosing, sending, paused) with their
    counters, for ``status``."""
    totals = (
        select(
            stats.c.campaign_id,
            func.sum(stats.c.sent).label("sent"),
            func.sum(stats.c.failed).label("failed"),
            func.sum(stats.c.pending).label("pending"),
        )
        .group_by(stats.c.campaign_id)
        .subquery()
    )
    campaigns = table_of(Campaign)
    query = (
        select(
            campaigns.c.id,
            campaigns.c.sponsor_id,
            campaigns.c.name,
            campaigns.c.status,
            campaigns.c.total_recipients,
            campaigns.c.queued_at,
            func.now().label("now"),
            func.coalesce(totals.c.sent, 0).label("sent"),
            func.coalesce(totals.c.failed, 0).label("failed"),
            func.coalesce(totals.c.pending, 0).label("pending"),
        )
        .select_from(campaigns.outerjoin(totals, totals.c.campaign_id == campaigns.c.id))
        .where(campaigns.c.status.in_(_RUNNING))
        .order_by(campaigns.c.queued_at.desc().nulls_last(), campaigns.c.id)
        .limit(limit)
    )
    return list((await session.execute(query)).all())


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    """Campaigns per status (the ``campaign_campaigns`` gauge; one grouped index scan)."""
    rows = await session.execute(select(Campaign.status, func.count()).group_by(Campaign.status))
    return {status: int(count) for status, count in rows.all()}
