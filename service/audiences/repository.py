"""Every SQL statement about audiences: the live count and sample of a filter.

The count is exact whenever PostgreSQL can produce it within
``AUDIENCE_PREVIEW_EXACT_MS``. Past that budget — very broad audiences of
hundreds of thousands of leads, where an exact count reads most of the table
— the preview answers an estimate from a block sample of ``leads`` and says
so (``exact: false``). An audience the sample already puts above
``EXACT_CEILING`` is not counted exactly at all: that attempt could only time
out. With no budget (0) every count is exact. Campaign creation and the
planner always count exactly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, not_, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.util import ClauseAdapter

from service.audiences.filters import audience_clause, leads, suppressed_clause
from service.models import Lead

SAMPLE_SIZE = 10
# Rows an estimate reads: enough for a few per cent of error on a broad audience.
ESTIMATE_ROWS = 20_000
EXACT_CEILING = 100_000
_QUERY_CANCELED = "57014"


async def preview(
    session: AsyncSession,
    sponsor_id: str,
    audience_type: str,
    audience_filter: Any,
    exact_budget_ms: int = 0,
) -> tuple[int, bool, list[Lead]]:
    """(count, exact, sample): leads the audience reaches now, suppressed left out.

    The same compiled clause as campaign creation and the planner.
    ``exact_budget_ms`` 0 means no budget: always exact.
    """
    audience = audience_clause(sponsor_id, audience_type, audience_filter)
    where = (audience, not_(suppressed_clause()))
    sample = list((await session.scalars(select(Lead).where(*where).limit(SAMPLE_SIZE))).all())
    if len(sample) < SAMPLE_SIZE:
        return len(sample), True, sample
    count_query = select(func.count()).select_from(leads).where(*where)
    if exact_budget_ms <= 0:
        return int(await session.scalar(count_query) or 0), True, sample
    estimate = await _estimate(session, audience)
    if estimate > EXACT_CEILING:
        return estimate, False, sample
    try:
        async with session.begin_nested():
            await session.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(exact_budget_ms)},
            )
            count = int(await session.scalar(count_query) or 0)
            await session.execute(text("SELECT set_config('statement_timeout', '0', true)"))
        return count, True, sample
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _QUERY_CANCELED:
            raise
    return max(estimate, len(sample)), False, sample


async def _estimate(session: AsyncSession, audience: Any) -> int:
    """Count over a block sample of ``leads`` (TABLESAMPLE SYSTEM), scaled up."""
    rows = float(
        await session.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'leads'::regclass"))
        or 0
    )
    percent = min(100.0, max(0.01, 100.0 * ESTIMATE_ROWS / max(rows, 1.0)))
    sampled = leads.tablesample(func.system(percent))
    adapter = ClauseAdapter(sampled)
    where = (adapter.traverse(audience), not_(adapter.traverse(suppressed_clause())))
    hits = int(await session.scalar(select(func.count()).select_from(sampled).where(*where)) or 0)
    return round(hits * 100.0 / percent)
