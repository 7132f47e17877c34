"""Campaign rules: what may be created, sent or deleted, and what that sets in motion."""

from __future__ import annotations

import uuid

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_CAMPAIGNS, CampaignQueued
from schemas.http import CampaignIn
from service import outbox
from service.campaigns import repository
from service.errors import Conflict, Forbidden
from service.models import Campaign, Sponsor
from service.templates.render import compile_message


def ensure_can_send(sponsor: Sponsor) -> None:
    if not sponsor.can_send_messages:
        raise Forbidden(
            "messaging_disabled", "this sponsor may not send messages", "can_send_messages"
        )


async def create(
    session: AsyncSession, sponsor: Sponsor, body: CampaignIn
) -> tuple[Campaign, int | None]:
    """Validate and insert a campaign; queue it unless it is a draft.

    Returns the campaign and the outbox id to publish after the commit (None for drafts).
    """
    compile_message(body.subject, body.message_body, body.html_body)
    if not body.draft:
        ensure_can_send(sponsor)
    campaign = Campaign(
        id=uuid.uuid4(),
        sponsor_id=sponsor.id,
        name=body.name,
        subject=body.subject,
        message_body=body.message_body,
        html_body=body.html_body,
        audience_type=body.audience_type,
        event_id=body.event_id,
        metadata_=body.metadata,
        status="draft",
        total_recipients=await repository.count_audience(session, sponsor.id, body.audience_type),
    )
    session.add(campaign)
    await session.flush()
    outbox_id = None if body.draft else await queue(session, sponsor, campaign)
    return campaign, outbox_id


async def queue(session: AsyncSession, sponsor: Sponsor, campaign: Campaign) -> int:
    """draft → queued, and the event the planner waits for, in the same transaction."""
    if campaign.status != "draft":
        raise Conflict(
            "invalid_status", f"only a draft can be sent; this campaign is {campaign.status}"
        )
    ensure_can_send(sponsor)
    campaign.status = "queued"
    campaign.queued_at = func.now()
    campaign.updated_at = func.now()
    await session.flush()
    event = CampaignQueued(campaign_id=campaign.id, sponsor_id=sponsor.id)
    return await outbox.add(session, TOPIC_CAMPAIGNS, str(campaign.id), event.to_bytes())


async def delete_draft(session: AsyncSession, campaign: Campaign) -> None:
    if campaign.status != "draft":
        raise Conflict(
            "invalid_status", f"only drafts can be deleted; this campaign is {campaign.status}"
        )
    await repository.delete_campaign(session, campaign.id)
