"""HTTP routes for campaigns, their deliveries and their stats."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from schemas.http import (
    CampaignIn,
    CampaignOut,
    CampaignStatsOut,
    CampaignStatus,
    DeliveryOut,
    DeliveryStatus,
    Page,
    RetryFailedOut,
    ScheduleIn,
)
from service import outbox
from service.auth import require
from service.campaigns import logic, repository
from service.http import decode_cursor, encode_cursor, transaction
from service.models import Campaign
from service.settings import Settings
from service.sponsors import repository as sponsors

router = APIRouter(prefix="/api/v1/sponsors/{sponsor_id}/campaigns", tags=["campaigns"])

Limit = Annotated[int, Query(ge=1, le=500)]


def _out(campaign: Campaign) -> CampaignOut:
    return CampaignOut(
        id=campaign.id,
        sponsor_id=campaign.sponsor_id,
        name=campaign.name,
        subject=campaign.subject,
        message_body=campaign.message_body,
        html_body=campaign.html_body,
        audience_type=campaign.audience_type,
        audience_filter=campaign.audience_filter,
        event_id=campaign.event_id,
        metadata=campaign.metadata_,
        status=campaign.status,
        status_reason=campaign.status_reason,
        total_recipients=campaign.total_recipients,
        send_at=campaign.send_at,
        send_round=campaign.send_round,
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
        queued_at=campaign.queued_at,
        completed_at=campaign.completed_at,
    )


def _window(request: Request) -> int:
    settings: Settings = request.app.state.settings
    return settings.send_window_batches


async def _publish(request: Request, outbox_ids: int | list[int] | None) -> None:
    """Publish committed outbox rows now; the relay retries whatever this misses."""
    if outbox_ids is None:
        return
    ids = [outbox_ids] if isinstance(outbox_ids, int) else outbox_ids
    await outbox.publish(request.app.state.sessions, request.app.state.producer, ids)


@router.post(
    "", status_code=202, response_model=CampaignOut, dependencies=[require("campaigns:write")]
)
async def create_campaign(sponsor_id: str, body: CampaignIn, request: Request) -> CampaignOut:
    """Create a campaign: queued at once (202), or kept as a draft with ``draft: true``."""
    async with transaction(request) as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign, outbox_id = await logic.create(session, sponsor, body)
        await session.refresh(campaign)
    await _publish(request, outbox_id)
    return _out(campaign)


@router.get("", response_model=Page[CampaignOut], dependencies=[require("campaigns:read")])
async def list_campaigns(
    sponsor_id: str,
    request: Request,
    limit: Limit = 50,
    cursor: str | None = None,
    status: CampaignStatus | None = None,
) -> Page[CampaignOut]:
    after = None
    if cursor:
        created_at, campaign_id = decode_cursor(cursor, 2)
        try:
            after = (datetime.fromisoformat(str(created_at)), uuid.UUID(str(campaign_id)))
        except ValueError:
            after = None
    async with transaction(request) as session:
        await sponsors.get(session, sponsor_id)
        rows = await repository.list_page(
            session, sponsor_id, limit=limit + 1, status=status, after=after
        )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at.isoformat(), str(rows[-1].id))
    return Page(items=[_out(c) for c in rows], next_cursor=next_cursor)


@router.get("/{campaign_id}", response_model=CampaignOut, dependencies=[require("campaigns:read")])
async def get_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> CampaignOut:
    async with transaction(request) as session:
        return _out(await repository.get(session, sponsor_id, campaign_id))


@router.post(
    "/{campaign_id}/send",
    status_code=202,
    response_model=CampaignOut,
    dependencies=[require("campaigns:write")],
)
async def send_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> CampaignOut:
    """Queue a draft for sending."""
    async with transaction(request) as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign = await repository.get(session, sponsor_id, campaign_id)
        outbox_id = await logic.queue(session, sponsor, campaign)
        await session.refresh(campaign)
    await _publish(request, outbox_id)
    return _out(campaign)


@router.post(
    "/{campaign_id}/schedule",
    response_model=CampaignOut,
    dependencies=[require("campaigns:write")],
)
async def schedule_campaign(
    sponsor_id: str, campaign_id: uuid.UUID, body: ScheduleIn, request: Request
) -> CampaignOut:
    """Schedule a draft (or move a scheduled campaign) to ``send_at``."""
    async with transaction(request) as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign = await repository.get(session, sponsor_id, campaign_id)
        logic.schedule(sponsor, campaign, body.send_at)
        await session.flush()
        await session.refresh(campaign)
    return _out(campaign)


@router.post(
    "/{campaign_id}/pause", response_model=CampaignOut, dependencies=[require("campaigns:write")]
)
async def pause_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> CampaignOut:
    """Stop sending after the batches in flight; ``resume`` continues where it stopped."""
    async with transaction(request) as session:
        campaign = await repository.get(session, sponsor_id, campaign_id)
        logic.pause(campaign)
        await session.flush()
        await session.refresh(campaign)
    return _out(campaign)


@router.post(
    "/{campaign_id}/resume",
    status_code=202,
    response_model=CampaignOut,
    dependencies=[require("campaigns:write")],
)
async def resume_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> CampaignOut:
    async with transaction(request) as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign = await repository.get(session, sponsor_id, campaign_id)
        outbox_ids = await logic.resume(session, sponsor, campaign, _window(request))
        await session.flush()
        await session.refresh(campaign)
    await _publish(request, outbox_ids)
    return _out(campaign)


@router.post(
    "/{campaign_id}/cancel", response_model=CampaignOut, dependencies=[require("campaigns:write")]
)
async def cancel_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> CampaignOut:
    """Cancel for good: sent rows stay as they are, pending ones become ``cancelled``."""
    async with transaction(request) as session:
        campaign = await repository.get(session, sponsor_id, campaign_id)
        await logic.cancel(session, campaign)
        await session.refresh(campaign)
    return _out(campaign)


@router.post(
    "/{campaign_id}/retry-failed",
    status_code=202,
    response_model=RetryFailedOut,
    dependencies=[require("campaigns:write")],
)
async def retry_failed(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> RetryFailedOut:
    """Re-drive only the failed recipients that are not suppressed (new idempotency keys)."""
    async with transaction(request) as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign = await repository.get(session, sponsor_id, campaign_id)
        retried, outbox_ids = await logic.retry_failed(session, sponsor, campaign, _window(request))
        await session.flush()
        await session.refresh(campaign)
    await _publish(request, outbox_ids)
    return RetryFailedOut(retried=retried, campaign=_out(campaign))


@router.delete("/{campaign_id}", status_code=204, dependencies=[require("campaigns:write")])
async def delete_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> Response:
    """Delete a draft; any other status is a 409."""
    async with transaction(request) as session:
        campaign = await repository.get(session, sponsor_id, campaign_id)
        await logic.delete_draft(session, campaign)
    return Response(status_code=204)


@router.get(
    "/{campaign_id}/deliveries",
    response_model=Page[DeliveryOut],
    dependencies=[require("campaigns:read")],
)
async def list_deliveries(
    sponsor_id: str,
    campaign_id: uuid.UUID,
    request: Request,
    status: DeliveryStatus | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[DeliveryOut]:
    after_id = None
    if cursor:
        (value,) = decode_cursor(cursor, 1)
        after_id = int(value) if isinstance(value, int) else None
    async with transaction(request) as session:
        await repository.get(session, sponsor_id, campaign_id)
        rows: list[Any] = await repository.deliveries_page(
            session, campaign_id, status=status, after_id=after_id, limit=limit + 1
        )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].id)
    return Page(
        items=[DeliveryOut.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=next_cursor,
    )


@router.get(
    "/{campaign_id}/stats", response_model=CampaignStatsOut, dependencies=[require("stats:read")]
)
async def campaign_stats(
    sponsor_id: str, campaign_id: uuid.UUID, request: Request
) -> CampaignStatsOut:
    """Counters kept by the workers; never a scan over deliveries."""
    async with transaction(request) as session:
        campaign = await repository.get(session, sponsor_id, campaign_id)
        counts = await repository.counters(session, campaign_id)
    return CampaignStatsOut(
        campaign_id=campaign.id,
        status=campaign.status,
        total_recipients=campaign.total_recipients,
        **counts,
    )
