"""Every SQL statement about campaigns, their deliveries and their counters.

Per-recipient work is set-based: the planner writes all delivery rows with one
``INSERT … SELECT``; the sender moves a whole batch with one ``UPDATE … FROM
unnest(…)``. Counters live in ``campaign_stats``, sharded by batch number so
concurrent senders do not queue on one row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, literal, not_, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_CAMPAIGN_BATCHES, CampaignBatch
from service.audiences.filters import audience_clause, leads, suppressed_clause
from service.errors import NotFound
from service.models import Campaign, CampaignDelivery, CampaignStats, OutboxMessage, table_of

STATS_SHARDS = 16
COUNTERS = ("pending", "sent", "failed", "suppressed", "cancelled")

deliveries = table_of(CampaignDelivery)
stats = table_of(CampaignStats)
outbox_table = table_of(OutboxMessage)


async def get(session: AsyncSession, sponsor_id: str, campaign_id: uuid.UUID) -> Campaign:
    """The sponsor's campaign, or 404 (another sponsor's campaign does not exist for you)."""
    campaign = await session.scalar(
        select(Campaign).where(Campaign.id == campaign_id, Campaign.sponsor_id == sponsor_id)
    )
    if campaign is None:
        raise NotFound("campaign_not_found", f"no campaign '{campaign_id}'", "campaign_id")
    return campaign


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


async def count_audience(session: AsyncSession, sponsor_id: str, audience_type: str) -> int:
    """How many leads the audience reaches now, suppressed addresses left out."""
    query = (
        select(func.count())
        .select_from(leads)
        .where(audience_clause(sponsor_id, audience_type), not_(suppressed_clause()))
    )
    return int(await session.scalar(query) or 0)


async def delete_campaign(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    await session.execute(delete(Campaign).where(Campaign.id == campaign_id))


@dataclass(frozen=True, slots=True)
class Plan:
    recipients: int
    suppressed: int
    batches: int


async def plan_deliveries(session: AsyncSession, campaign: Campaign, batch_size: int) -> Plan:
    """Write one ``pending`` row per matching, unsuppressed lead, numbered into batches.

    Idempotent: rows that exist already are left alone. Counters start here.
    """
    audience = audience_clause(campaign.sponsor_id, campaign.audience_type)
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
    suppressed = int(
        await session.scalar(
            select(func.count()).select_from(leads).where(audience, suppressed_clause())
        )
        or 0
    )
    shard = deliveries.c.batch_no % STATS_SHARDS
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


@dataclass(frozen=True, slots=True)
class Recipient:
    """A pending delivery with the lead fields a template may use."""

    delivery_id: int
    email: str
    fields: dict[str, Any]


_LOAD_BATCH = text("""
SELECT d.id, d.recipient_email, l.name, l.first_name, l.last_name, l.company, l.title,
       l.attributes
FROM campaign_deliveries d
LEFT JOIN leads l ON l.id = d.lead_id
WHERE d.campaign_id = :campaign_id AND d.batch_no = :batch_no AND d.status = 'pending'
ORDER BY d.id
""")


async def load_pending_batch(
    session: AsyncSession, campaign_id: uuid.UUID, batch_no: int
) -> list[Recipient]:
    rows = await session.execute(_LOAD_BATCH, {"campaign_id": campaign_id, "batch_no": batch_no})
    return [
        Recipient(
            delivery_id=row.id,
            email=row.recipient_email,
            fields={
                "email": row.recipient_email,
                "name": row.name,
                "first_name": row.first_name,
                "last_name": row.last_name,
                "company": row.company,
                "title": row.title,
                "attributes": row.attributes or {},
            },
        )
        for row in rows
    ]


_MARK_SENT = text("""
UPDATE campaign_deliveries d
SET status = 'sent', provider_message_id = v.message_id, sent_at = now(),
    attempts = d.attempts + 1, last_error = NULL
FROM unnest(CAST(:ids AS bigint[]), CAST(:message_ids AS text[])) AS v(id, message_id)
WHERE d.id = v.id AND d.status = 'pending'
RETURNING d.id
""")

_MARK_FAILED = text("""
UPDATE campaign_deliveries d
SET status = 'failed', last_error = v.error, attempts = d.attempts + 1
FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS v(id, error)
WHERE d.id = v.id AND d.status = 'pending'
RETURNING d.id
""")


async def record_batch_outcome(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    batch_no: int,
    sent: Sequence[tuple[int, str]],
    failed: Sequence[tuple[int, str]],
) -> tuple[int, int]:
    """Move rows still ``pending`` to sent/failed and count only the rows that moved.

    A batch handled twice moves nothing the second time, so counters stay right.
    """
    n_sent = n_failed = 0
    if sent:
        ids, message_ids = zip(*sent, strict=True)
        result = await session.execute(
            _MARK_SENT, {"ids": list(ids), "message_ids": list(message_ids)}
        )
        n_sent = len(result.all())
    if failed:
        ids, errors = zip(*failed, strict=True)
        result = await session.execute(_MARK_FAILED, {"ids": list(ids), "errors": list(errors)})
        n_failed = len(result.all())
    if n_sent or n_failed:
        await bump_counters(
            session,
            campaign_id,
            batch_no,
            pending=-(n_sent + n_failed),
            sent=n_sent,
            failed=n_failed,
        )
    return n_sent, n_failed


async def bump_counters(
    session: AsyncSession, campaign_id: uuid.UUID, batch_no: int, **deltas: int
) -> None:
    shard = batch_no % STATS_SHARDS
    values = {name: delta for name, delta in deltas.items() if delta}
    if not values:
        return
    stmt = pg_insert(stats).values(campaign_id=campaign_id, shard=shard, **values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["campaign_id", "shard"],
            set_={name: getattr(stats.c, name) + delta for name, delta in values.items()},
        )
    )


async def finish_if_done(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """Mark a ``sending`` campaign ``sent`` once no row is pending; True if it did."""
    pending = (
        select(1)
        .select_from(deliveries)
        .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == "pending")
        .exists()
    )
    result = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == "sending", not_(pending))
        .values(status="sent", completed_at=func.now(), updated_at=func.now())
        .returning(Campaign.id)
    )
    return result.first() is not None


async def counters(session: AsyncSession, campaign_id: uuid.UUID) -> dict[str, int]:
    """The campaign's counters, summed over shards (at most ``STATS_SHARDS`` rows)."""
    row = (
        await session.execute(
            select(*(func.coalesce(func.sum(getattr(stats.c, c)), 0) for c in COUNTERS)).where(
                stats.c.campaign_id == campaign_id
            )
        )
    ).one()
    return {name: int(value) for name, value in zip(COUNTERS, row, strict=True)}


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
    session: AsyncSession, campaign_id: uuid.UUID, batches: int, send_round: int
) -> list[int]:
    """One ``campaign-batches.v1`` outbox row per batch; returns their outbox ids."""
    if batches == 0:
        return []
    rows = [
        {
            "topic": TOPIC_CAMPAIGN_BATCHES,
            "key": f"{campaign_id}:{batch_no}",
            "payload": CampaignBatch(
                campaign_id=campaign_id, batch_no=batch_no, send_round=send_round
            ).to_bytes(),
        }
        for batch_no in range(batches)
    ]
    result = await session.execute(insert(outbox_table).returning(outbox_table.c.id), rows)
    return [int(row_id) for row_id in result.scalars()]


async def set_status(
    session: AsyncSession, campaign_id: uuid.UUID, status: str, reason: str | None = None
) -> None:
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(status=status, status_reason=reason, updated_at=func.now())
    )
