"""HTTP routes for campaigns and their deliveries (stats live in ``service.stats``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.ab import VariantsOut, WinnerIn
from schemas.http import (
    CampaignIn,
    CampaignOut,
    CampaignStatus,
    DeliveryOut,
    DeliveryStatus,
    Page,
    PreviewOut,
    RetryFailedOut,
    ScheduleIn,
    SendTestIn,
    SendTestOut,
)
from service import exports
from service.auth import Principal, current_principal, require
from service.campaigns import ab, logic, repository
from service.campaigns.deps import CurrentCampaign
from service.errors import Forbidden
from service.http import (
    CSV_RESPONSE,
    Cursor,
    LeadIdQuery,
    Limit,
    decode_id_cursor,
    decode_time_cursor,
    encode_cursor,
    encode_time_cursor,
    keyset_page,
    lookup,
    transaction,
)
from service.models import Campaign
from service.settings import Settings
from service.sponsors.deps import CurrentSponsor, KnownSponsor
from service.stats import logic as stats

router = APIRouter(
    prefix="/api/v1/sponsors/{sponsor_id}/campaigns",
    tags=["campaigns"],
    dependencies=[KnownSponsor],
)


def _out(campaign: Campaign) -> CampaignOut:
    return CampaignOut.model_validate(campaign, from_attributes=True)


def _window(request: Request) -> int:
    settings: Settings = request.app.state.settings
    return settings.send_window_batches


@router.post(
    "", status_code=202, response_model=CampaignOut, dependencies=[require("campaigns:write")]
)
async def create_campaign(
    sponsor: CurrentSponsor, body: CampaignIn, request: Request
) -> CampaignOut:
    """Create a campaign: queued at once (202), or kept as a draft with ``draft: true``."""
    async with transaction(request) as session:
        campaign = await logic.create(session, sponsor, body)
        await session.refresh(campaign)
    return _out(campaign)


@router.get("", response_model=Page[CampaignOut], dependencies=[require("campaigns:read")])
async def list_campaigns(
    sponsor_id: str,
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: CampaignStatus | None = None,
) -> Page[CampaignOut]:
    after = decode_time_cursor(cursor)
    async with transaction(request) as session:
        rows = await repository.list_page(
            session, sponsor_id, limit=limit + 1, status=status, after=after
        )
    rows, next_cursor = keyset_page(rows, limit, encode_time_cursor)
    return Page(items=[_out(c) for c in rows], next_cursor=next_cursor)


@router.get("/{campaign_id}", response_model=CampaignOut, dependencies=[require("campaigns:read")])
async def get_campaign(campaign: CurrentCampaign) -> CampaignOut:
    return _out(campaign)


T = TypeVar("T")


async def _act(
    request: Request,
    sponsor_id: str,
    campaign_id: uuid.UUID,
    action: Callable[[AsyncSession, Campaign], Awaitable[T]],
) -> tuple[Campaign, T]:
    """Run one lifecycle action on the campaign, locked in the request's transaction.

    The row lock makes concurrent actions on one campaign take turns, so each
    sees the status the previous one left (two sends of a draft: one 202, one 409).
    Returns the campaign as committed and the action's result.
    """
    async with transaction(request) as session:
        campaign = await repository.get(session, sponsor_id, campaign_id, lock=True)
        result = await action(session, campaign)
        await session.flush()
        await session.refresh(campaign)
    return campaign, result


@router.post(
    "/{campaign_id}/send",
    status_code=202,
    response_model=CampaignOut,
    dependencies=[require("campaigns:write")],
)
async def send_campaign(
    sponsor: CurrentSponsor, campaign_id: uuid.UUID, request: Request
) -> CampaignOut:
    """Queue a draft for sending."""

    async def send(session: AsyncSession, campaign: Campaign) -> None:
        await logic.queue(session, sponsor, campaign)

    campaign, _ = await _act(request, sponsor.id, campaign_id, send)
    return _out(campaign)


@router.post(
    "/{campaign_id}/schedule",
    response_model=CampaignOut,
    dependencies=[require("campaigns:write")],
)
async def schedule_campaign(
    sponsor: CurrentSponsor, campaign_id: uuid.UUID, body: ScheduleIn, request: Request
) -> CampaignOut:
    """Schedule a draft (or move a scheduled campaign) to ``send_at``."""

    async def schedule(session: AsyncSession, campaign: Campaign) -> None:
        await logic.schedule(session, sponsor, campaign, body.send_at)

    campaign, _ = await _act(request, sponsor.id, campaign_id, schedule)
    return _out(campaign)


@router.post(
    "/{campaign_id}/pause", response_model=CampaignOut, dependencies=[require("campaigns:write")]
)
async def pause_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> CampaignOut:
    """Stop sending after the batches in flight; ``resume`` continues where it stopped."""

    async def pause(session: AsyncSession, campaign: Campaign) -> None:
        logic.pause(campaign)

    campaign, _ = await _act(request, sponsor_id, campaign_id, pause)
    return _out(campaign)


@router.post(
    "/{campaign_id}/resume",
    status_code=202,
    response_model=CampaignOut,
    dependencies=[require("campaigns:write")],
)
async def resume_campaign(
    sponsor: CurrentSponsor, campaign_id: uuid.UUID, request: Request
) -> CampaignOut:
    async def resume(session: AsyncSession, campaign: Campaign) -> None:
        await logic.resume(session, sponsor, campaign, _window(request))

    campaign, _ = await _act(request, sponsor.id, campaign_id, resume)
    return _out(campaign)


@router.post(
    "/{campaign_id}/cancel", response_model=CampaignOut, dependencies=[require("campaigns:write")]
)
async def cancel_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> CampaignOut:
    """Cancel for good: sent rows stay as they are, pending ones become ``cancelled``."""
    campaign, _ = await _act(request, sponsor_id, campaign_id, logic.cancel)
    return _out(campaign)


@router.post(
    "/{campaign_id}/retry-failed",
    status_code=202,
    response_model=RetryFailedOut,
    dependencies=[require("campaigns:write")],
)
async def retry_failed(
    sponsor: CurrentSponsor, campaign_id: uuid.UUID, request: Request
) -> RetryFailedOut:
    """Re-drive only the failed recipients that are not suppressed (new idempotency keys)."""

    async def retry(session: AsyncSession, campaign: Campaign) -> int:
        return await logic.retry_failed(session, sponsor, campaign, _window(request))

    campaign, retried = await _act(request, sponsor.id, campaign_id, retry)
    return RetryFailedOut(retried=retried, campaign=_out(campaign))


@router.post(
    "/{campaign_id}/winner",
    status_code=202,
    response_model=CampaignOut,
    dependencies=[require("campaigns:write")],
)
async def choose_winner(
    sponsor: CurrentSponsor, campaign_id: uuid.UUID, body: WinnerIn, request: Request
) -> CampaignOut:
    """Choose an A/B test's winner by hand (while testing or waiting for the winner):
    the rest of the audience is planned and sent that variant."""

    async def choose(session: AsyncSession, campaign: Campaign) -> None:
        await ab.choose_by_hand(session, campaign, body.variant)

    campaign, _ = await _act(request, sponsor.id, campaign_id, choose)
    return _out(campaign)


@router.get(
    "/{campaign_id}/variants", response_model=VariantsOut, dependencies=[require("stats:read")]
)
async def campaign_variants(campaign: CurrentCampaign, request: Request) -> VariantsOut:
    """An A/B test's figures per variant, the confidence of each against the leader, and
    the decision once taken."""
    async with lookup(request) as session:
        return await ab.view(session, campaign)


@router.delete("/{campaign_id}", status_code=204, dependencies=[require("campaigns:write")])
async def delete_campaign(sponsor_id: str, campaign_id: uuid.UUID, request: Request) -> Response:
    """Delete a draft; any other status is a 409."""
    async with transaction(request) as session:
        campaign = await repository.get(session, sponsor_id, campaign_id, lock=True)
        await logic.delete_draft(session, campaign)
    return Response(status_code=204)


@router.get("/{campaign_id}/deliveries", response_model=Page[DeliveryOut], responses=CSV_RESPONSE)
async def list_deliveries(
    campaign: CurrentCampaign,
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    status: DeliveryStatus | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    format: Literal["json", "csv"] = "json",
) -> Page[DeliveryOut] | StreamingResponse:
    """A page of deliveries (``campaigns:read``), or with ``?format=csv`` every row
    streamed (``stats:read`` or ``campaigns:read``)."""
    scopes = ("campaigns:read", "stats:read") if format == "csv" else ("campaigns:read",)
    if not any(principal.has_scope(s) for s in scopes):
        raise Forbidden("insufficient_scope", f"this route needs the '{scopes[-1]}' scope")
    if format == "csv":
        return StreamingResponse(
            stats.deliveries_csv(request.app.state.engine, campaign.id),
            media_type=exports.MEDIA_TYPE,
            headers=exports.attachment(f"deliveries-{campaign.id}.csv"),
        )
    after_id = decode_id_cursor(cursor)
    async with transaction(request) as session:
        rows: list[Any] = await repository.deliveries_page(
            session, campaign.id, status=status, after_id=after_id, limit=limit + 1
        )
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return Page(
        items=[DeliveryOut.model_validate(row, from_attributes=True) for row in rows[:limit]],
        next_cursor=next_cursor,
    )


@router.get(
    "/{campaign_id}/preview",
    response_model=PreviewOut,
    dependencies=[require("campaigns:read")],
    responses={200: {"content": {"text/html": {}, "text/plain": {}}}},
)
async def preview_campaign(
    sponsor: CurrentSponsor,
    campaign: CurrentCampaign,
    request: Request,
    lead_id: LeadIdQuery = None,
    format: Annotated[Literal["html", "text", "json"], Query()] = "html",
    variant: Annotated[str | None, Query(min_length=1, max_length=1)] = None,
) -> Any:
    """Exactly what ``lead_id`` would get (its own tokens and A/B variant once it has a
    delivery row), or a sample lead; ``variant=B`` shows an A/B variant; ``format=json``
    gives subject, html and text together."""
    settings: Settings = request.app.state.settings
    async with lookup(request) as session:
        fields, delivery_id = await logic.preview_lead(session, sponsor.id, campaign.id, lead_id)
        shown = await ab.preview_variant(session, campaign, variant, delivery_id)
    rendered = await logic.render_preview(settings, sponsor, campaign, fields, delivery_id, shown)
    if format == "html":
        return HTMLResponse(rendered.html)
    if format == "text":
        return PlainTextResponse(rendered.text)
    return PreviewOut(subject=rendered.subject, html=rendered.html, text=rendered.text)


@router.post(
    "/{campaign_id}/test",
    status_code=202,
    response_model=SendTestOut,
    dependencies=[require("campaigns:write")],
)
async def send_test(
    sponsor: CurrentSponsor, campaign: CurrentCampaign, body: SendTestIn, request: Request
) -> SendTestOut:
    """Send the message to up to 10 addresses through the sender, subject ``[TEST] …``;
    they have no delivery rows, are never counted, and their tokens are ignored."""
    emails = [logic.validate_address(a, f"emails.{i}") for i, a in enumerate(body.emails)]
    async with transaction(request) as session:
        event = await logic.send_test(session, sponsor, campaign, emails, body.lead_id)
    return SendTestOut(request_id=event.request_id, recipients=emails)
