"""Every SQL statement about sponsors."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.http import SponsorIn
from service.errors import NotFound
from service.models import Sponsor


async def upsert(session: AsyncSession, sponsor_id: str, body: SponsorIn) -> tuple[Sponsor, bool]:
    """Create or replace a sponsor; returns it and whether it was created."""
    values = body.model_dump()
    values["provider"] = body.provider.stored() if body.provider is not None else None
    stmt = (
        insert(Sponsor)
        .values(id=sponsor_id, **values)
        .on_conflict_do_update(
            index_elements=[Sponsor.id], set_={**values, "updated_at": func.now()}
        )
        .returning(Sponsor, (Sponsor.created_at == Sponsor.updated_at).label("created"))
    )
    row = (await session.execute(stmt)).one()
    return row[0], bool(row[1])


async def get(session: AsyncSession, sponsor_id: str) -> Sponsor:
    sponsor = await session.scalar(select(Sponsor).where(Sponsor.id == sponsor_id))
    if sponsor is None:
        raise NotFound("sponsor_not_found", f"no sponsor '{sponsor_id}'", "sponsor_id")
    return sponsor
