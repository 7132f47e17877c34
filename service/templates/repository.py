"""Every SQL statement about templates, their versions and campaigns' tracked links."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import NotFound
from service.models import (
    Campaign,
    CampaignDelivery,
    CampaignLink,
    Lead,
    Sponsor,
    Template,
    TemplateVersion,
)


async def get(
    session: AsyncSession, sponsor_id: str, template_id: uuid.UUID, *, lock: bool = False
) -> Template:
    query = select(Template).where(Template.id == template_id, Template.sponsor_id == sponsor_id)
    if lock:
        query = query.with_for_update()
    template = await session.scalar(query)
    if template is None:
        raise NotFound("template_not_found", f"no template '{template_id}'", "template_id")
    return template


async def get_version(
    session: AsyncSession, template_id: uuid.UUID, version: int
) -> TemplateVersion:
    row = await session.scalar(
        select(TemplateVersion).where(
            TemplateVersion.template_id == template_id, TemplateVersion.version == version
        )
    )
    if row is None:
        raise NotFound(
            "template_version_not_found", f"template has no version {version}", "template_version"
        )
    return row


async def list_versions(session: AsyncSession, template_id: uuid.UUID) -> list[TemplateVersion]:
    query = (
        select(TemplateVersion)
        .where(TemplateVersion.template_id == template_id)
        .order_by(TemplateVersion.version.desc())
    )
    return list((await session.scalars(query)).all())


async def list_page(
    session: AsyncSession,
    sponsor_id: str,
    *,
    limit: int,
    category: str | None,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Template]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Template).where(Template.sponsor_id == sponsor_id)
    if category:
        query = query.where(Template.category == category)
    if after:
        created_at, template_id = after
        query = query.where(
            or_(
                Template.created_at < created_at,
                and_(Template.created_at == created_at, Template.id < template_id),
            )
        )
    query = query.order_by(Template.created_at.desc(), Template.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def delete_template(session: AsyncSession, template_id: uuid.UUID) -> None:
    await session.execute(delete(Template).where(Template.id == template_id))


async def save_links(session: AsyncSession, campaign_id: uuid.UUID, urls: Sequence[str]) -> None:
    """The campaign's tracked targets by position; writing them twice changes nothing."""
    if not urls:
        return
    rows = [
        {"campaign_id": campaign_id, "position": position, "url": url}
        for position, url in enumerate(urls)
    ]
    await session.execute(pg_insert(CampaignLink).values(rows).on_conflict_do_nothing())


async def lead_fields(session: AsyncSession, sponsor_id: str, lead_id: int) -> dict[str, Any]:
    """What a template sees of one of the sponsor's leads; 404 when it is not theirs."""
    lead = await session.scalar(
        select(Lead).where(Lead.id == lead_id, Lead.sponsor_id == sponsor_id)
    )
    if lead is None:
        raise NotFound("lead_not_found", f"no lead {lead_id}", "lead_id")
    return {
        "email": lead.email,
        "name": lead.name,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "company": lead.company,
        "title": lead.title,
        "attributes": lead.attributes or {},
    }


async def delivery_id_for(
    session: AsyncSession, campaign_id: uuid.UUID, lead_id: int
) -> int | None:
    return await session.scalar(
        select(CampaignDelivery.id).where(
            CampaignDelivery.campaign_id == campaign_id, CampaignDelivery.lead_id == lead_id
        )
    )


_DELIVERY_VIEW = text("""
SELECT d.id, d.campaign_id, d.lead_id, d.recipient_email, d.variant
FROM campaign_deliveries d WHERE d.id = :delivery_id
""")


async def delivery_for_view(
    session: AsyncSession, delivery_id: int
) -> tuple[Campaign, Sponsor, dict[str, Any], int | None] | None:
    """A delivery's campaign, sponsor, lead fields (lead deleted: the address only) and
    A/B variant (None: the campaign's content or, once chosen, the winner)."""
    row = (await session.execute(_DELIVERY_VIEW, {"delivery_id": delivery_id})).first()
    if row is None:
        return None
    pair = (
        await session.execute(
            select(Campaign, Sponsor)
            .join(Sponsor, Sponsor.id == Campaign.sponsor_id)
            .where(Campaign.id == row.campaign_id)
        )
    ).first()
    if pair is None:
        return None
    campaign, sponsor = pair
    try:
        fields = await lead_fields(session, sponsor.id, row.lead_id)
    except NotFound:
        fields = {"email": row.recipient_email, "attributes": {}}
    return campaign, sponsor, fields, row.variant
