"""The SQL of campaigns for the API, planning and lifecycle: campaigns, their
deliveries and their counters. Sending a batch is in ``sending_repository``;
the scheduler, reconciler and overviews are in ``reconciler_repository``.

Per-recipient work is set-based: the planner writes all delivery rows with one
``INSERT … SELECT``; the sender moves a whole batch with one ``UPDATE … FROM
unnest(…)``. Counters live in ``campaign_stats``, sharded by batch number
(``service.stats.counters``) so concurrent senders do not queue on one row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, literal, not_, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from schemas.events import TOPIC_CAMPAIGN_BATCHES, CampaignBatch
from service import outbox
from service.audiences.filters import audience_clause, leads, suppressed_clause
from service.campaigns import ab_repository, lifecycle
from service.campaigns.ab_repository import Plan
from service.campaigns.lifecycle import Action
from service.errors import NotFound
from service.models import Campaign, CampaignDelivery, CampaignStats, table_of
from service.stats import counters

deliveries = table_of(CampaignDelivery)
stats = table_of(CampaignStats)


async def get(
    session: AsyncSession, sponsor_id: str, campaign_id: uuid.UUID, *, lock: bool = False
) -> Campaign:
    """The sponsor's campaign, or 404 (another sponsor's campaign does not exist for you).

    With ``lock``, the row stays locked until the transaction ends: an action that
    changes the status reads it under the lock, so two at once take turns and the
    second sees what the first did.
    """
    query = select(Campaign).where(Campaign.id == campaign_id, Campaign.sponsor_id == sponsor_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    campaign = await session.scalar(query)
    if campaign is None:
        raise campaign_not_found(campaign_id)
    return campaign


def campaign_not_found(campaign_id: uuid.UUID) -> NotFound:
    return NotFound("campaign_not_found", f"no campaign '{campaign_id}'", "campaign_id")


async def get_for_update(session: AsyncSession, campaign_id: uuid.UUID) -> Campaign | None:
    return await session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    )


async def list_page(
    session: AsyncSession,
    sponsor_id: str,
    *,
    limit: int,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Campaign]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Campaign).where(Campaign.sponsor_id == sponsor_id)
    if status:
        query = query.where(Campaign.status == status)
    if after:
        created_at, campaign_id = after
        query = query.where(
            or_(
                Campaign.created_at < created_at,
                and_(Campaign.created_at == created_at, Campaign.id < campaign_id),
            )
        )
    query = query.order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def count_audience(
    session: AsyncSession, sponsor_id: str, audience_type: str, audience_filter: Any = None
) -> int:
    """How many leads the audience reaches now, suppressed addresses left out."""
    query = (
        select(func.count())
        .select_from(leads)
        .where(
            audience_clause(sponsor_id, audience_type, audience_filter),
            not_(suppressed_clause()),
        )
    )
    return int(await session.scalar(query) or 0)


async def delete_campaign(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    await session.execute(delete(Campaign).where(Campaign.id == campaign_id))


async def plan_deliveries(session: AsyncSession, campaign: Campaign, batch_size: int) -> Plan:
    """Write one ``pending`` row per matching, unsuppressed lead, numbered into batches.

    Idempotent: rows that exist already are left alone. Counters start here.
    """
    audience = audience_clause(
        campaign.sponsor_id, campaign.audience_type, campaign.audience_filter
    )
    row_number = func.row_number().over(order_by=leads.c.id)
    source = select(
        literal(campaign.id).label("campaign_id"),
        leads.c.id,
        leads.c.email,
        (row_number - 1).self_group().op("/")(batch_size).label("batch_no"),
    ).where(audience, not_(suppressed_clause()))
    await session.execute(
        pg_insert(deliveries)
        .from_select(["campaign_id", "lead_id", "recipient_email", "batch_no"], source)
        .on_conflict_do_nothing()
    )
    shard = counters.shard_expression(deliveries.c.batch_no)
    await session.execute(
        pg_insert(stats)
        .from_select(
            ["campaign_id", "shard", "pending"],
            select(literal(campaign.id), shard, func.count())
            .where(deliveries.c.campaign_id == campaign.id)
            .group_by(shard),
        )
        .on_conflict_do_nothing()
    )
    return await ab_repository.summed_up(session, campaign)


# Autovacuum analyzes a table once a tenth of it changed (and only at its next
# round); until then PostgreSQL knows nothing of a campaign that is most of the
# table, and may load each batch by scanning every pending row of the campaign
# through ``(campaign_id, status, id)`` instead of the pending index.
_STALE_SHARE = 0.1


async def refresh_delivery_statistics(session: AsyncSession, new_rows: int) -> bool:
    """ANALYZE ``campaign_deliveries`` when ``new_rows`` are a large share of it; True if so."""
    known = await session.scalar(
        text("SELECT reltuples FROM pg_class WHERE oid = 'campaign_deliveries'::regclass")
    )
    # reltuples is -1 until the table was first vacuumed or analyzed.
    if known is not None and known >= 0 and new_rows <= _STALE_SHARE * known:
        return False
    await session.execute(text("ANALYZE campaign_deliveries"))
    return True


async def finish_if_done(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """Mark a ``sending`` campaign ``sent`` once no row is pending (an A/B ``testing``
    one ``waiting_for_winner``, and its decision timer set); True if it did."""
    pending = (
        select(1)
        .select_from(deliveries)
        .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == "pending")
        .exists()
    )
    finished = await transition(
        session,
        Action.FINISH,
        Campaign.id == campaign_id,
        not_(pending),
        completed_at=case((Campaign.status == "sending", func.now()), else_=None),
    )
    if finished:
        await ab_repository.schedule_decision(session, campaign_id)
    return bool(finished)


async def transition(
    session: AsyncSession,
    action: Action,
    *where: ColumnElement[bool],
    reason: str | None = None,
    **values: Any,
) -> list[uuid.UUID]:
    """Move every campaign matching ``where`` that ``action`` is allowed from; their ids.

    One conditional ``UPDATE``: sources and targets come from the lifecycle table,
    so a campaign another actor moved meanwhile (a cancel, a pause) is left alone.
    """
    moves = lifecycle.moves(action)
    target = case({s.value: t.value for s, t in moves.items()}, value=Campaign.status)
    result = await session.execute(
        update(Campaign)
        .where(Campaign.status.in_([s.value for s in moves]), *where)
        .values(status=target, status_reason=reason, updated_at=func.now(), **values)
        .returning(Campaign.id)
    )
    return list(result.scalars())


async def auto_pause(session: AsyncSession, campaign_id: uuid.UUID, reason: str) -> bool:
    """Pause a campaign that is queued or sending (the sender's guards); True if it did."""
    paused = await transition(session, Action.AUTO_PAUSE, Campaign.id == campaign_id, reason=reason)
    return bool(paused)


async def auto_pause_sponsor(
    session: AsyncSession, sponsor_id: str, reason: str
) -> list[uuid.UUID]:
    """Pause the sponsor's campaigns that are queued or sending (the reputation guard)."""
    return await transition(
        session, Action.AUTO_PAUSE, Campaign.sponsor_id == sponsor_id, reason=reason
    )


async def deliveries_page(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    *,
    status: str | None,
    after_id: int | None,
    limit: int,
) -> list[Any]:
    """Delivery rows in id order, keyset-paginated."""
    query = select(deliveries).where(deliveries.c.campaign_id == campaign_id)
    if status:
        query = query.where(deliveries.c.status == status)
    if after_id is not None:
        query = query.where(deliveries.c.id > after_id)
    query = query.order_by(deliveries.c.id).limit(limit)
    return list((await session.execute(query)).all())


async def queue_batches(
    session: AsyncSession, campaign_id: uuid.UUID, batch_nos: Sequence[int], send_round: int
) -> None:
    """One ``campaign-batches.v1`` outbox message per batch."""
    await outbox.add(
        session,
        (
            (
                TOPIC_CAMPAIGN_BATCHES,
                f"{campaign_id}:{batch_no}",
                CampaignBatch(
                    campaign_id=campaign_id, batch_no=batch_no, send_round=send_round
                ).to_bytes(),
            )
            for batch_no in batch_nos
        ),
    )


# Batches of a campaign that still have pending rows, from a batch number up, in order:
# the pending index read in order until ``limit`` batches are found.
_PENDING_BATCHES = text("""
SELECT DISTINCT batch_no FROM campaign_deliveries
WHERE campaign_id = :campaign_id AND batch_no BETWEEN :first AND :last AND status = 'pending'
ORDER BY batch_no
LIMIT :limit
""")


async def _pending_batches(
    session: AsyncSession, campaign_id: uuid.UUID, first: int, last: int, limit: int
) -> list[int]:
    if first > last:
        return []
    rows = await session.execute(
        _PENDING_BATCHES,
        {"campaign_id": campaign_id, "first": first, "last": last, "limit": limit},
    )
    return [int(n) for n in rows.scalars()]


async def open_window(session: AsyncSession, campaign: Campaign, size: int) -> None:
    """(Re)start sending: the first ``size`` batches with pending rows go to Kafka.

    Used by the planner, resume, retry-failed and the reconciler. Batches that
    may already be in flight are harmless to send again (idempotent sender).
    """
    batch_nos = await _pending_batches(session, campaign.id, 0, campaign.batch_count - 1, size)
    campaign.enqueue_cursor = batch_nos[-1] if batch_nos else campaign.batch_count - 1
    campaign.last_progress_at = func.now()
    await queue_batches(session, campaign.id, batch_nos, campaign.send_round)


async def move_rows(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    from_status: str,
    to_status: str,
    *,
    skip_suppressed: bool = False,
) -> int:
    """Move every row of one status to another and keep the counters in step."""
    assert from_status in counters.SENDING and to_status in counters.SENDING
    suppressed = (
        """AND NOT EXISTS (
            SELECT 1 FROM suppressions s JOIN campaigns c ON c.id = d.campaign_id
            WHERE s.email = d.recipient_email
              AND (s.sponsor_id = c.sponsor_id OR s.sponsor_id IS NULL))"""
        if skip_suppressed
        else ""
    )
    # Column names come from the assert above, never from input.
    statement = text(f"""
WITH moved AS (
    UPDATE campaign_deliveries d SET status = :to_status, last_error = NULL
    WHERE d.campaign_id = :campaign_id AND d.status = :from_status {suppressed}
    RETURNING {counters.shard_sql("d.batch_no")} AS shard
), counted AS (
    INSERT INTO campaign_stats (campaign_id, shard, {from_status}, {to_status})
    SELECT :campaign_id, shard, -count(*), count(*) FROM moved GROUP BY shard
    ON CONFLICT (campaign_id, shard) DO UPDATE SET
        {from_status} = campaign_stats.{from_status} + EXCLUDED.{from_status},
        {to_status} = campaign_stats.{to_status} + EXCLUDED.{to_status}
    RETURNING 1
)
SELECT count(*) FROM moved
""")  # noqa: S608 - column names are counters (the assert above), never input
    moved = await session.scalar(
        statement,
        {"campaign_id": campaign_id, "from_status": from_status, "to_status": to_status},
    )
    return int(moved or 0)
