"""Campaign rules: what may be created, sent or deleted, and what that sets in motion."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_CAMPAIGN_TESTS, TOPIC_CAMPAIGNS, CampaignQueued, CampaignTestSend
from schemas.http import CampaignIn
from service import outbox
from service.campaigns import ab, lifecycle, reconciler_repository, repository, scheduler
from service.campaigns.lifecycle import Action, CampaignStatus
from service.errors import Conflict, Forbidden, RenderError, Unprocessable
from service.models import Campaign, Sponsor
from service.settings import Settings
from service.templates import logic as templates
from service.templates import repository as templates_repository
from service.templates.compiled import RenderedMessage
from service.templates.urls import NO_DELIVERY
from service.templates.variables import SAMPLE_LEAD
from service.timers.repository import DueTimer


def ensure_can_send(sponsor: Sponsor) -> None:
    """Messaging allowed, and a postal address for the footer (bulk-sender rules)."""
    if not sponsor.can_send_messages:
        raise Forbidden(
            "messaging_disabled", "this sponsor may not send messages", "can_send_messages"
        )
    if not (sponsor.postal_address or "").strip():
        raise Unprocessable(
            "postal_address_required",
            "marketing messages must show the sender's postal address: "
            "set the sponsor's postal_address first",
            "postal_address",
        )


async def create(session: AsyncSession, sponsor: Sponsor, body: CampaignIn) -> Campaign:
    """Validate and insert a campaign; queue it unless it is a draft or scheduled."""
    content, template_id, template_version = await templates.campaign_content(
        session, sponsor.id, body
    )
    if not body.draft:
        ensure_can_send(sponsor)
    ab_test = ab.settings_of(body)
    scheduled = not body.draft and body.send_at is not None and body.send_at > datetime.now(UTC)
    campaign = Campaign(
        id=uuid.uuid4(),
        sponsor_id=sponsor.id,
        name=body.name,
        subject=content.subject,
        message_body=content.message_body,
        html_body=content.html_body,
        text_body=content.text_body,
        template_id=template_id,
        template_version=template_version,
        tracking_enabled=body.tracking_enabled,
        audience_type=body.audience_type,
        audience_filter=body.audience_filter,
        event_id=body.event_id,
        metadata_=body.metadata,
        ab_test=ab_test,
        # Every campaign is born a draft; creating it "scheduled" is the draft's schedule.
        status=CampaignStatus.SCHEDULED if scheduled else CampaignStatus.DRAFT,
        send_at=body.send_at,
        total_recipients=await repository.count_audience(
            session, sponsor.id, body.audience_type, body.audience_filter
        ),
    )
    # Validates the content (422 naming the field) and numbers its tracked links.
    compiled = await templates.compile_for_save(
        content, templates.brand_for(sponsor, campaign), tracking=body.tracking_enabled
    )
    if ab_test is not None:
        await _check_variants(sponsor, campaign, compiled.links)
    session.add(campaign)
    await session.flush()
    await templates_repository.save_links(session, campaign.id, compiled.links)
    if scheduled:
        await scheduler.set_start(session, campaign)
    elif not body.draft:
        await queue(session, sponsor, campaign)
    return campaign


async def _check_variants(sponsor: Sponsor, campaign: Campaign, links: tuple[str, ...]) -> None:
    """Each variant compiles (422 naming it) and tracks the campaign's links.

    Click tokens name a link by its position in the campaign's list, shared by
    every variant, so a variant's body may reword but not change the links.
    """
    assert campaign.ab_test is not None
    brand = templates.brand_for(sponsor, campaign)
    for i in range(len(campaign.ab_test["variants"])):
        content, _ = ab.variant_content(campaign, i)
        try:
            compiled = await templates.compile_for_save(
                content, brand, tracking=campaign.tracking_enabled
            )
        except Unprocessable as exc:
            raise Unprocessable(exc.code, exc.message, f"variants.{i}.{exc.field}") from None
        if campaign.tracking_enabled and compiled.links != links:
            raise Unprocessable(
                "variant_links_differ",
                "a variant's body must link to the same URLs, in the same order, as the campaign",
                f"variants.{i}",
            )


async def queue(session: AsyncSession, sponsor: Sponsor, campaign: Campaign) -> None:
    """draft/scheduled → queued, and the event the planner waits for, in one transaction.

    The caller holds the campaign's row lock (``repository.get(..., lock=True)``),
    so of two concurrent sends of one draft the second sees it queued and is refused.
    """
    lifecycle.require(campaign.status, Action.SEND)
    ensure_can_send(sponsor)
    await enqueue_planning(session, campaign, Action.SEND)


async def enqueue_planning(session: AsyncSession, campaign: Campaign, action: Action) -> None:
    """Mark the campaign queued by ``action`` and write the planner's event to the outbox."""
    lifecycle.apply(campaign, action)
    campaign.queued_at = func.now()
    await session.flush()
    event = CampaignQueued(campaign_id=campaign.id, sponsor_id=campaign.sponsor_id)
    await outbox.add(session, [(TOPIC_CAMPAIGNS, str(campaign.id), event.to_bytes())])


async def schedule(
    session: AsyncSession, sponsor: Sponsor, campaign: Campaign, send_at: datetime
) -> None:
    """draft → scheduled; its start timer queues it when ``send_at`` comes."""
    lifecycle.require(campaign.status, Action.SCHEDULE)
    ensure_can_send(sponsor)
    lifecycle.apply(campaign, Action.SCHEDULE)
    campaign.send_at = send_at
    await scheduler.set_start(session, campaign)


async def start_due(session: AsyncSession, batch: Sequence[DueTimer]) -> None:
    """The ``campaign.start`` timers of a batch: each campaign still scheduled and due is
    queued (``Action.START``), in one locking query for the batch."""
    ids = [uuid.UUID(timer.payload["campaign_id"]) for timer in batch]
    for campaign in await reconciler_repository.scheduled_among(session, ids, datetime.now(UTC)):
        await enqueue_planning(session, campaign, Action.START)


def pause(campaign: Campaign, reason: str = "paused by user") -> None:
    """Senders skip a paused campaign's batches (they check at most a second late)."""
    lifecycle.apply(campaign, Action.PAUSE, reason)


async def resume(session: AsyncSession, sponsor: Sponsor, campaign: Campaign, window: int) -> None:
    """paused → where it stopped: scheduled, queued or sending (and its next batches)."""
    lifecycle.require(campaign.status, Action.RESUME)
    ensure_can_send(sponsor)
    if await ab.resume(session, campaign):
        return  # an A/B test before its winner: testing or choosing again
    if campaign.planned_at is None:
        if campaign.queued_at is None and campaign.send_at is not None:
            # Paused before its time: wait for it again (its timer may have fired
            # meanwhile, to no effect: set it again).
            lifecycle.apply(campaign, Action.RESUME_SCHEDULE)
            await scheduler.set_start(session, campaign)
            return
        await enqueue_planning(session, campaign, Action.RESUME_PLANNING)
        return
    lifecycle.apply(campaign, Action.RESUME)
    await repository.open_window(session, campaign, window)


async def cancel(session: AsyncSession, campaign: Campaign) -> int:
    """Stop for good: rows already sent stay; every pending row becomes ``cancelled``."""
    lifecycle.apply(campaign, Action.CANCEL)
    campaign.completed_at = func.now()
    await session.flush()
    return await repository.move_rows(session, campaign.id, "pending", "cancelled")


async def retry_failed(
    session: AsyncSession, sponsor: Sponsor, campaign: Campaign, window: int
) -> int:
    """Re-drive the failed recipients that are not suppressed, with new idempotency keys.

    Returns how many rows were re-driven (none: the campaign stays as it is).
    """
    lifecycle.require(campaign.status, Action.RETRY_FAILED)
    ensure_can_send(sponsor)
    if campaign.ab_test is not None and campaign.ab_winner is None:
        # Failed test rows are retried with the rest, once the winner is known.
        raise Conflict("ab_test_undecided", "choose the A/B winner first", "status")
    moved = await repository.move_rows(
        session, campaign.id, "failed", "pending", skip_suppressed=True
    )
    if not moved:
        return 0
    campaign.send_round += 1  # a new round: new idempotency keys for the same batches
    lifecycle.apply(campaign, Action.RETRY_FAILED)
    campaign.completed_at = None
    await repository.open_window(session, campaign, window)
    return moved


async def delete_draft(session: AsyncSession, campaign: Campaign) -> None:
    lifecycle.require(campaign.status, Action.DELETE)
    await repository.delete_campaign(session, campaign.id)


# ---------------------------------------------------------------- previews and test sends


def validate_address(address: str, field: str) -> str:
    """The address normalised, or a 422 naming ``field``."""
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise Unprocessable("invalid_email", str(exc), field) from None


async def preview_lead(
    session: AsyncSession, sponsor_id: str, campaign_id: uuid.UUID, lead_id: int | None
) -> tuple[dict[str, Any], int | None]:
    """What a preview personalises with: the lead's fields and its delivery, if it has one
    (so the preview carries its own tokens), or a sample lead's fields; 404 for a lead
    that is not the sponsor's."""
    if lead_id is None:
        return dict(SAMPLE_LEAD), None
    fields = await templates_repository.lead_fields(session, sponsor_id, lead_id)
    return fields, await templates_repository.delivery_id_for(session, campaign_id, lead_id)


async def render_preview(
    settings: Settings,
    sponsor: Sponsor,
    campaign: Campaign,
    fields: dict[str, Any],
    delivery_id: int | None,
    variant: int | None = None,
) -> RenderedMessage:
    """The campaign's message (or A/B ``variant``'s) for ``fields``; a template that fails
    for them is a 422."""
    builder = templates.url_builder(settings)
    try:
        return await templates.render_campaign(
            sponsor,
            campaign,
            fields,
            lambda n_links: builder.for_delivery(delivery_id or NO_DELIVERY, n_links),
            variant,
        )
    except RenderError as exc:
        raise Unprocessable("render_error", str(exc), "lead_id") from None


async def send_test(
    session: AsyncSession,
    sponsor: Sponsor,
    campaign: Campaign,
    emails: list[str],
    lead_id: int | None,
) -> CampaignTestSend:
    """Ask the sender (through the outbox) for a ``[TEST]`` message to each address.

    Test messages have no delivery rows and are never counted; their tokens
    name no delivery, so opens, clicks and unsubscribes from them are ignored.
    """
    ensure_can_send(sponsor)
    if lead_id is not None:
        await templates_repository.lead_fields(session, sponsor.id, lead_id)
    event = CampaignTestSend(
        request_id=uuid.uuid4(),
        campaign_id=campaign.id,
        sponsor_id=sponsor.id,
        emails=emails,
        lead_id=lead_id,
    )
    await outbox.add(session, [(TOPIC_CAMPAIGN_TESTS, str(campaign.id), event.to_bytes())])
    return event
