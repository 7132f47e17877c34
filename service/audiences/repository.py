"""Every SQL statement about audiences: the live count and sample of a filter."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, not_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.audiences.filters import audience_clause, leads, suppressed_clause
from service.models import Lead

SAMPLE_SIZE = 10


async def preview(
    session: AsyncSession, sponsor_id: str, audience_type: str, audience_filter: Any
) -> tuple[int, list[Lead]]:
    """Exact count of the leads the audience reaches now (suppressed left out) and a sample.

    The same compiled clause as campaign creation and the planner.
    """
    where = (audience_clause(sponsor_id, audience_type, audience_filter), not_(suppressed_clause()))
    count = await session.scalar(select(func.count()).select_from(leads).where(*where))
    sample = await session.scalars(select(Lead).where(*where).order_by(Lead.id).limit(SAMPLE_SIZE))
    return int(count or 0), list(sample.all())
