"""Every SQL statement about audiences: the live count and sample of a filter.

Presets, and custom filters over ``intent_level`` and ``follow_up_status``
only, are counted exactly without reading the leads: a sum over
``lead_tallies``, kept by triggers on ``leads`` and ``suppressions``
(migrations 0008 and 0010), of the leads whose address is not suppressed.

Other custom filters count the matching leads, suppressed ones left out:
exact whenever PostgreSQL can produce the count within
``AUDIENCE_PREVIEW_EXACT_MS``. Past that budget the preview answers an
estimate from a uniform random sample of the sponsor's leads, with its error
bound and confidence (``service.audiences.estimate``), and says so
(``exact: false``). An audience PostgreSQL's statistics put above
``EXACT_CEILING`` is not counted exactly at all: that attempt could only time
out. With no budget (0) every count is exact.

Campaign creation and the planner always count exactly.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Column, and_, any_, func, literal, not_, select, text, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import visitors
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.sql.selectable import Select

from service.audiences import live
from service.audiences.estimate import Estimate, estimate
from service.audiences.filter_language import parse_filter
from service.audiences.filters import (
    audience_clause,
    audience_criterion,
    leads,
    suppressed_clause,
)
from service.models import Lead, LeadTally, table_of

tallies = table_of(LeadTally)

SAMPLE_SIZE = 10
# Leads an estimate draws: one primary-key probe each. The bound shrinks with
# the square root of the draws, the cost grows with them.
ESTIMATE_DRAWS = 2_500
EXACT_CEILING = 100_000
# A sponsor's tally rows (one per statement that changed leads) are folded into
# one per group once there are more than this.
COMPACT_ABOVE = 200
_TALLIED = ("intent_level", "follow_up_status")
_QUERY_CANCELED = "57014"
# Which leads an estimate draws; tests seed it.
_draws = random.Random()


@dataclass(frozen=True, slots=True)
class Preview:
    """The audience's size now, suppressed addresses left out, and up to 10 of its leads.

    Exact: ``error_bound`` 0 and ``confidence`` 1. An estimate: the true count
    lies within ``count ± error_bound`` with probability ``confidence``.
    """

    count: int
    exact: bool
    sample: list[Lead] = field(default_factory=list)
    error_bound: int = 0
    confidence: float = 1.0

    @classmethod
    def estimated(cls, guess: Estimate, sample: list[Lead]) -> Preview:
        return cls(guess.count, False, sample, guess.error_bound, guess.confidence)


async def preview(
    session: AsyncSession,
    sponsor_id: str,
    audience_type: str,
    audience_filter: Any,
    exact_budget_ms: int = 0,
) -> Preview:
    """The leads the audience reaches now, suppressed left out: count and sample.

    The same compiled clause as campaign creation and the planner.
    ``exact_budget_ms`` 0 means no budget: always exact.
    """
    criterion = audience_criterion(audience_type, audience_filter)
    on_tallies = _on_tallies(criterion)
    if on_tallies is None:
        # A custom filter the tallies cannot count: the in-memory index, exact,
        # and its sample read by primary key.
        node = parse_filter(audience_filter)
        found = await live.reach(session, sponsor_id, node, SAMPLE_SIZE, wait=False)
        if found is not None:
            return Preview(found.count, True, await _leads(session, found.sample_ids))
    audience = audience_clause(sponsor_id, audience_type, audience_filter)
    sample = list(
        (
            await session.scalars(
                select(Lead).where(audience, not_(suppressed_clause())).limit(SAMPLE_SIZE)
            )
        ).all()
    )
    if len(sample) < SAMPLE_SIZE:
        return Preview(len(sample), True, sample)
    if on_tallies is not None:
        return Preview(await _tallied(session, sponsor_id, on_tallies), True, sample)
    count_query = select(func.count()).select_from(leads).where(audience, not_(suppressed_clause()))
    if exact_budget_ms <= 0:
        return Preview(int(await session.scalar(count_query) or 0), True, sample)
    # The planner's guess only routes: an audience it puts past the ceiling
    # would only time out, so its budget goes unspent.
    if await _planned_rows(session, audience) > EXACT_CEILING:
        guess = await estimate_audience(session, sponsor_id, criterion, len(sample))
        return Preview.estimated(guess, sample)
    try:
        async with session.begin_nested():
            await session.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(exact_budget_ms)},
            )
            count = int(await session.scalar(count_query) or 0)
            await session.execute(text("SELECT set_config('statement_timeout', '0', true)"))
        return Preview(count, True, sample)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _QUERY_CANCELED:
            raise
    guess = await estimate_audience(session, sponsor_id, criterion, len(sample))
    return Preview.estimated(guess, sample)


async def _leads(session: AsyncSession, ids: list[int]) -> list[Lead]:
    if not ids:
        return []
    return list(
        (await session.scalars(select(Lead).where(Lead.id.in_(ids)).order_by(Lead.id))).all()
    )


class _Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON)`` of a statement, with its bound parameters."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(_Explain, "postgresql")
def _compile_explain(element: _Explain, compiler: Any, **kw: Any) -> str:
    return f"EXPLAIN (FORMAT JSON) {compiler.process(element.statement, **kw)}"


async def _planned_rows(session: AsyncSession, audience: ColumnElement[bool]) -> float:
    """How many leads PostgreSQL's statistics expect the audience to match: planning, no count."""
    plan = await session.scalar(_Explain(select(literal(1)).select_from(leads).where(audience)))
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"]) if plan else 0.0


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


async def estimate_audience(
    session: AsyncSession,
    sponsor_id: str,
    criterion: ColumnElement[bool] | None,
    at_least: int = 0,
) -> Estimate:
    """The audience's size from up to ``ESTIMATE_DRAWS`` leads drawn uniformly at random.

    Ids are drawn uniformly between the sponsor's lowest and highest lead id
    and looked up by primary key: an id that is no lead of the sponsor with an
    email is a miss and not counted, so the leads that are found are a uniform
    sample of them whatever the gaps (deleted leads, other sponsors' ids). A
    block sample (``TABLESAMPLE SYSTEM``) is cheaper per row but its rows come
    in clusters (an import writes similar leads side by side), so no binomial
    bound holds for it. ``at_least`` leads are known to match.
    """
    low, high = (
        await session.execute(
            select(func.min(leads.c.id), func.max(leads.c.id)).where(
                leads.c.sponsor_id == sponsor_id
            )
        )
    ).one()
    population = int(
        await session.scalar(
            select(func.coalesce(func.sum(tallies.c.leads), 0)).where(
                tallies.c.sponsor_id == sponsor_id
            )
        )
        or 0
    )
    if low is None or population == 0:
        return estimate(0, 0, 0)
    # Each id once: a sample without replacement, for which the interval is
    # conservative; sorted, the primary key is read in one ordered pass.
    ids = sorted({_draws.randint(low, high) for _ in range(ESTIMATE_DRAWS)})
    matching = not_(suppressed_clause())
    if criterion is not None:
        matching = and_(criterion, matching)
    hits, found = (
        await session.execute(
            select(func.count().filter(matching), func.count()).where(
                leads.c.id == any_(literal(ids, ARRAY(BigInteger))),
                audience_clause(sponsor_id, "all"),
            )
        )
    ).one()
    return estimate(int(hits), int(found), population, at_least)
