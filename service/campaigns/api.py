"""HTTP routes for campaigns and their deliveries (stats live in ``service.stats``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse

from schemas.events import TOPIC_CAMPAIGN_TESTS, CampaignTestSend
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
from service import outbox
from service.auth import Principal, current_principal, require
from service.campaigns import logic, repository
from service.errors import Forbidden, RenderError, Unprocessable
from service.http import (
    CSV_RESPONSE,
    Cursor,
    LeadIdQuery,
    decode_id_cursor,
    decode_time_cursor,
    encode_cursor,
    transaction,
)
from service.models import Campaign
from service.settings import Settings
from service.sponsors import repository as sponsors
from service.stats import api as stats_api
from service.templates import logic as templates
from service.templates import repository as templates_repository
from service.templates.urls import NO_DELIVERY
from service.templates.variables import SAMPLE_LEAD

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
        text_body=campaign.text_body,
        template_id=campaign.template_id,
        template_version=campaign.template_version,
        tracking_enabled=campaign.tracking_enabled,
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
    cursor: Cursor = None,
    status: CampaignStatus | None = None,
) -> Page[CampaignOut]:
    after = decode_time_cursor(cursor)
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


@router.get("/{campaign_id}/deliveries", response_model=Page[DeliveryOut], responses=CSV_RESPONSE)
async def list_deliveries(
    sponsor_id: str,
    campaign_id: uuid.UUID,
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    status: DeliveryStatus | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    format: Literal["json", "csv"] = "json",
) -> Page[DeliveryOut] | StreamingResponse:
    """A page of deliveries (``campaigns:read``), or with ``?format=csv`` every row
    streamed (``stats:read`` or ``campaigns:read``)."""
    if not principal.may_act_for(sponsor_id):
        raise Forbidden("sponsor_forbidden", "this token may not act for this sponsor")
    scopes = ("campaigns:read", "stats:read") if format == "csv" else ("campaigns:read",)
    if not any(principal.has_scope(s) for s in scopes):
        raise Forbidden("insufficient_scope", f"this route needs the '{scopes[-1]}' scope")
    if format == "csv":
        async with transaction(request) as session:
            await repository.get(session, sponsor_id, campaign_id)
        return stats_api.deliveries_csv(request, campaign_id, f"deliveries-{campaign_id}.csv")
    after_id = decode_id_cursor(cursor)
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
    "/{campaign_id}/preview",
    response_model=PreviewOut,
    dependencies=[require("campaigns:read")],
    responses={200: {"content": {"text/html": {}, "text/plain": {}}}},
)
async def preview_campaign(
    sponsor_id: str,
    campaign_id: uuid.UUID,
    request: Request,
    lead_id: LeadIdQuery = None,
    format: Annotated[Literal["html", "text", "json"], Query()] = "html",
) -> Any:
    """Exactly what ``lead_id`` would get (its own tokens once it has a delivery row),
    or a sample lead; ``format=json`` gives subject, html and text together."""
    async with transaction(request) as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign = await repository.get(session, sponsor_id, campaign_id)
        fields = dict(SAMPLE_LEAD)
        delivery_id = None
        if lead_id is not None:
            fields = await templates_repository.lead_fields(session, sponsor_id, lead_id)
            delivery_id = await templates_repository.delivery_id_for(session, campaign_id, lead_id)
    builder = templates.url_builder(request.app.state.settings)
    try:
        rendered = await templates.render_campaign(
            sponsor,
            campaign,
            fields,
            lambda n_links: builder.for_delivery(delivery_id or NO_DELIVERY, n_links),
        )
    except RenderError as exc:
        raise Unprocessable("render_error", str(exc), "lead_id") from None
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
    sponsor_id: str, campaign_id: uuid.UUID, body: SendTestIn, request: Request
) -> SendTestOut:
    """Send the message to up to 10 addresses through the sender, subject ``[TEST] …``.

    Test messages have no delivery rows and are never counted; their tokens
    name no delivery, so opens, clicks and unsubscribes from them are ignored.
    """
    emails = [validate_address(address, f"emails.{i}") for i, address in enumerate(body.emails)]
    async with transaction(request) as session:
        sponsor = await sponsors.get(session, sponsor_id)
        campaign = await repository.get(session, sponsor_id, campaign_id)
        logic.ensure_can_send(sponsor)
        if body.lead_id is not None:
            await templates_repository.lead_fields(session, sponsor_id, body.lead_id)
        event = CampaignTestSend(
            request_id=uuid.uuid4(),
            campaign_id=campaign.id,
            sponsor_id=sponsor_id,
            emails=emails,
            lead_id=body.lead_id,
        )
        outbox_id = await outbox.add(
            session, TOPIC_CAMPAIGN_TESTS, str(campaign.id), event.to_bytes()
        )
    await _publish(request, outbox_id)
    return SendTestOut(request_id=event.request_id, recipients=emails)


def validate_address(address: str, field: str) -> str:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise Unprocessable("invalid_email", str(exc), field) from None
