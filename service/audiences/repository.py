"""Every SQL statement about audiences: the live count and sample of a filter.

Presets, and custom filters over ``intent_level`` and ``follow_up_status``
only, are counted exactly without reading the leads: a sum over
``lead_tallies``, kept by triggers on ``leads`` and ``suppressions``
(migrations 0008 and 0010), of the leads whose address is not suppressed.

Other custom filters count the matching leads, suppressed ones left out:
exact whenever PostgreSQL can produce the count within
``AUDIENCE_PREVIEW_EXACT_MS``. Past that budget — broad audiences of hundreds
of thousands of leads, where a count reads most of the table — the preview
answers an estimate from a block sample of ``leads`` and says so
(``exact: false``). An audience the sample already puts above
``EXACT_CEILING`` is not counted exactly at all: that attempt could only time
out. With no budget (0) every count is exact.

Campaign creation and the planner always count exactly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, and_, func, not_, select, text, true
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.util import ClauseAdapter

from service.audiences.filters import (
    audience_clause,
    audience_criterion,
    leads,
    suppressed_clause,
)
from service.models import Lead, LeadTally, table_of

tallies = table_of(LeadTally)

SAMPLE_SIZE = 10
# Rows an estimate reads: enough for a few per cent of error on a broad audience.
ESTIMATE_ROWS = 20_000
EXACT_CEILING = 100_000
# A sponsor's tally rows (one per statement that changed leads) are folded into
# one per group once there are more than this.
COMPACT_ABOVE = 200
_TALLIED = ("intent_level", "follow_up_status")
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
    criterion = audience_criterion(audience_type, audience_filter)
    audience = audience_clause(sponsor_id, audience_type, audience_filter)
    sample = list(
        (
            await session.scalars(
                select(Lead).where(audience, not_(suppressed_clause())).limit(SAMPLE_SIZE)
            )
        ).all()
    )
    if len(sample) < SAMPLE_SIZE:
        return len(sample), True, sample
    on_tallies = _on_tallies(criterion)
    if on_tallies is not None:
        return await _tallied(session, sponsor_id, on_tallies), True, sample
    count_query = select(func.count()).select_from(leads).where(audience, not_(suppressed_clause()))
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


def _on_tallies(criterion: ColumnElement[bool] | None) -> ColumnElement[bool] | None:
    """The criterion over ``lead_tallies``, or None when it asks about other columns."""
    if criterion is None:
        return true()
    columns = {e for e in visitors.iterate(criterion) if isinstance(e, Column)}
    if any(column.table is not leads or column.name not in _TALLIED for column in columns):
        return None

    def to_tallies(element: Any, **_kw: Any) -> Any:
        return tallies.c[element.name] if isinstance(element, Column) else None

    tallied: ColumnElement[bool] = visitors.replacement_traverse(criterion, {}, to_tallies)
    return tallied


async def _tallied(session: AsyncSession, sponsor_id: str, criterion: ColumnElement[bool]) -> int:
    """Leads with an email matching ``criterion``, not suppressed, summed from the tallies."""
    reached = and_(criterion, not_(tallies.c.suppressed))
    total, rows = (
        await session.execute(
            select(func.coalesce(func.sum(tallies.c.leads).filter(reached), 0), func.count()).where(
                tallies.c.sponsor_id == sponsor_id
            )
        )
    ).one()
    if rows > COMPACT_ABOVE:
        await compact_tallies(session, sponsor_id)
    return int(total)


async def compact_tallies(session: AsyncSession, sponsor_id: str) -> None:
    """Fold the sponsor's tally rows into one per group, sums unchanged.

    Rows of transactions still running are not visible, so not folded: they stay
    as they are. Skipped while another transaction compacts the same sponsor.
    """
    key = func.hashtext(f"lead_tallies:{sponsor_id}")
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(key))):
        return
    await session.execute(
        text(
            "WITH gone AS (DELETE FROM lead_tallies WHERE sponsor_id = :sponsor "
            "RETURNING intent_level, follow_up_status, suppressed, leads) "
            "INSERT INTO lead_tallies "
            "(sponsor_id, intent_level, follow_up_status, suppressed, leads) "
            "SELECT :sponsor, intent_level, follow_up_status, suppressed, sum(leads) FROM gone "
            "GROUP BY intent_level, follow_up_status, suppressed HAVING sum(leads) <> 0"
        ),
        {"sponsor": sponsor_id},
    )


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
