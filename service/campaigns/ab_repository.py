"""The SQL of A/B tests: planning the test share and the rest, and each variant's figures.

Both phases write delivery rows with one ``INSERT … SELECT`` and count the
rows that were new into the ``pending`` counters in the same statement, so
planning again (a redelivered event, a retried timer) writes and counts nothing
twice: (campaign, lead) is unique, and the rest leaves out every lead that
already has a row, so no lead is sent two variants.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import SmallInteger, Text, cast, exists, func, literal, not_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import Select

from service.audiences.filters import audience_clause, leads, suppressed_clause
from service.models import Campaign, CampaignDelivery, CampaignStats, table_of
from service.stats import counters
from service.timers import repository as timers

deliveries = table_of(CampaignDelivery)
stats = table_of(CampaignStats)

# The timer that chooses the winner once the wait is over (``service.campaigns.ab``).
DECIDE_KIND = "ab.decide"


def decide_key(campaign_id: uuid.UUID) -> str:
    return f"{DECIDE_KIND}:{campaign_id}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The campaign's rows once planned (every phase; ``repository`` plans too)."""

    recipients: int
    suppressed: int
    batches: int


def _audience(campaign: Campaign) -> Any:
    return audience_clause(campaign.sponsor_id, campaign.audience_type, campaign.audience_filter)


def split_key(campaign_id: uuid.UUID) -> Any:
    """Where a lead falls in the campaign's shuffle: a hash of (campaign, lead), so the
    same lead lands in the same place in every planning, and campaigns shuffle apart."""
    return func.md5(literal(f"{campaign_id}:") + cast(leads.c.id, Text))


def _test_share_source(
    campaign: Campaign, batch_size: int, share: int, n_variants: int
) -> Select[Any]:
    """The first ``share`` percent of the shuffled audience, dealt round the variants."""
    rank = func.row_number().over(order_by=(split_key(campaign.id), leads.c.id))
    ranked = (
        select(
            leads.c.id,
            leads.c.email,
            rank.label("rn"),
            func.count().over().label("total"),
        )
        .where(_audience(campaign), not_(suppressed_clause()))
        .subquery("ranked")
    )
    return select(
        literal(campaign.id).label("campaign_id"),
        ranked.c.id,
        ranked.c.email,
        (ranked.c.rn - 1).self_group().op("/")(batch_size).label("batch_no"),
        ((ranked.c.rn - 1) % n_variants).label("variant"),
    ).where(ranked.c.rn <= func.ceil(ranked.c.total * share / 100.0))


def _rest_source(campaign: Campaign, batch_size: int) -> Select[Any]:
    """Every matching lead without a row yet, numbered on from the test's batches."""
    has_row = exists(
        select(1).where(deliveries.c.campaign_id == campaign.id, deliveries.c.lead_id == leads.c.id)
    )
    rank = func.row_number().over(order_by=leads.c.id)
    return select(
        literal(campaign.id).label("campaign_id"),
        leads.c.id,
        leads.c.email,
        (campaign.batch_count + (rank - 1).self_group().op("/")(batch_size)).label("batch_no"),
        cast(literal(None), SmallInteger).label("variant"),
    ).where(_audience(campaign), not_(suppressed_clause()), not_(has_row))


async def summed_up(session: AsyncSession, campaign: Campaign) -> Plan:
    """Once rows are planned: count the audience's suppressed leads into the stats, and
    the campaign's rows and batches."""
    suppressed = int(
        await session.scalar(
            select(func.count()).select_from(leads).where(_audience(campaign), suppressed_clause())
        )
        or 0
    )
    await session.execute(
        pg_insert(stats)
        .values(campaign_id=campaign.id, shard=0, suppressed=suppressed)
        .on_conflict_do_update(
            index_elements=["campaign_id", "shard"], set_={"suppressed": suppressed}
        )
    )
    totals = (
        await session.execute(
            select(func.count(), func.coalesce(func.max(deliveries.c.batch_no) + 1, 0)).where(
                deliveries.c.campaign_id == campaign.id
            )
        )
    ).one()
    return Plan(recipients=int(totals[0]), suppressed=suppressed, batches=int(totals[1]))


async def _plan(session: AsyncSession, campaign: Campaign, source: Select[Any]) -> Plan:
    """Insert ``source``'s rows, count the new ones as pending, and sum up the campaign."""
    inserted = (
        pg_insert(deliveries)
        .from_select(["campaign_id", "lead_id", "recipient_email", "batch_no", "variant"], source)
        .on_conflict_do_nothing()
        .returning(deliveries.c.batch_no)
        .cte("inserted")
    )
    shard = counters.shard_expression(inserted.c.batch_no)
    counted = pg_insert(stats).from_select(
        ["campaign_id", "shard", "pending"],
        select(literal(campaign.id), shard, func.count()).group_by(shard),
    )
    await session.execute(
        counted.on_conflict_do_update(
            index_elements=["campaign_id", "shard"],
            set_={"pending": stats.c.pending + counted.excluded.pending},
        ).add_cte(inserted)
    )
    return await summed_up(session, campaign)


async def plan_test_share(
    session: AsyncSession, campaign: Campaign, batch_size: int, share: int, n_variants: int
) -> Plan:
    """The test share's rows, each with its variant (the totals are the campaign's so far)."""
    source = _test_share_source(campaign, batch_size, share, n_variants)
    return await _plan(session, campaign, source)


async def plan_rest(session: AsyncSession, campaign: Campaign, batch_size: int) -> Plan:
    """The rest of the audience, variant NULL: sent the winner."""
    return await _plan(session, campaign, _rest_source(campaign, batch_size))


@dataclass(frozen=True, slots=True)
class VariantCounts:
    variant: int
    sent: int
    delivered: int
    opened: int
    clicked: int


# Human only: ``first_human_*`` are set by opens and clicks not flagged ``is_machine``.
# A click counts as an open too (images off still clicked).
_VARIANT_COUNTS = text("""
SELECT variant,
       count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,
       count(*) FILTER (WHERE delivered_at IS NOT NULL) AS delivered,
       count(*) FILTER (WHERE first_human_opened_at IS NOT NULL
                           OR first_human_clicked_at IS NOT NULL) AS opened,
       count(*) FILTER (WHERE first_human_clicked_at IS NOT NULL) AS clicked
FROM campaign_deliveries
WHERE campaign_id = :campaign_id AND variant IS NOT NULL
GROUP BY variant
ORDER BY variant
""")


async def variant_counts(
    session: AsyncSession | AsyncConnection, campaign_id: uuid.UUID
) -> list[VariantCounts]:
    """The test share's figures per variant (variants with no row yet are absent)."""
    rows = await session.execute(_VARIANT_COUNTS, {"campaign_id": campaign_id})
    return [VariantCounts(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


async def pending_rows(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """Whether any of the campaign's rows is still pending."""
    found = await session.scalar(
        select(
            exists().where(
                deliveries.c.campaign_id == campaign_id, deliveries.c.status == "pending"
            )
        )
    )
    return bool(found)


_DECIDE_AT = text("""
UPDATE campaigns SET ab_decide_at = now() + make_interval(secs => (ab_test->>'wait_seconds')::int)
WHERE id = :campaign_id AND status = 'waiting_for_winner' AND ab_test IS NOT NULL
  AND ab_winner IS NULL
RETURNING ab_decide_at
""")


async def schedule_decision(session: AsyncSession, campaign_id: uuid.UUID) -> datetime | None:
    """Once the test share is sent: the wait starts now and a timer chooses at its end.

    Nothing for a campaign that is no A/B test waiting for its winner."""
    due: datetime | None = await session.scalar(_DECIDE_AT, {"campaign_id": campaign_id})
    if due is not None:
        await schedule_timer(session, campaign_id, due)
    return due


async def schedule_timer(session: AsyncSession, campaign_id: uuid.UUID, due: datetime) -> None:
    key = decide_key(campaign_id)
    await timers.schedule(session, DECIDE_KIND, key, due, {"campaign_id": str(campaign_id)})


async def cancel_timer(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    """A decision taken by hand leaves the timer nothing to do."""
    await timers.cancel(session, [decide_key(campaign_id)])


async def variant_of(session: AsyncSession, delivery_id: int) -> int | None:
    """A delivery's variant (None: not a test-share row)."""
    found: int | None = await session.scalar(
        select(deliveries.c.variant).where(deliveries.c.id == delivery_id)
    )
    return found
