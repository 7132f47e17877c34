"""The SQL of sending a campaign: the batch's pending rows, its outcome, the hourly cap,
and what the delivery core reads of a campaign and its sponsor.

Per-recipient work is set-based: the sender loads a batch with one statement
and moves it with one ``UPDATE … FROM unnest(…)``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_CAMPAIGN_BATCHES, CampaignBatch
from service import db, outbox
from service.campaigns.lifecycle import CampaignStatus
from service.models import Campaign, Sponsor
from service.outbox import OutboxRow
from service.stats import counters

# The statuses whose batches go out: an A/B test share's too.
SENDS = [CampaignStatus.SENDING.value, CampaignStatus.TESTING.value]


async def campaign_with_sponsor(
    session: AsyncSession, campaign_id: uuid.UUID
) -> tuple[Campaign, Sponsor] | None:
    """The campaign and its sponsor, read once per campaign to compile its message."""
    row = (
        await session.execute(
            select(Campaign, Sponsor)
            .join(Sponsor, Sponsor.id == Campaign.sponsor_id)
            .where(Campaign.id == campaign_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def status_and_template(
    session: AsyncSession, campaign_id: uuid.UUID
) -> tuple[str, str | None, int | None] | None:
    """The campaign's status, provider template decision and A/B winner, for a cached
    campaign."""
    row = (
        await session.execute(
            select(Campaign.status, Campaign.provider_template_id, Campaign.ab_winner).where(
                Campaign.id == campaign_id
            )
        )
    ).first()
    return None if row is None else (row.status, row.provider_template_id, row.ab_winner)


@dataclass(slots=True)  # not frozen: built per recipient, cheaper; treat as read-only
class Recipient:
    """A pending delivery with the lead fields a template may use."""

    delivery_id: int
    email: str
    fields: dict[str, Any]
    # The A/B variant of a test-share row; None: the campaign's message (or its winner).
    variant: int | None = None


_LOAD_BATCH = text("""
SELECT d.id, d.recipient_email, l.name, l.first_name, l.last_name, l.company, l.title,
       l.attributes, d.variant
FROM campaign_deliveries d
LEFT JOIN leads l ON l.id = d.lead_id
WHERE d.campaign_id = :campaign_id AND d.batch_no = :batch_no AND d.status = 'pending'
ORDER BY d.id
""")
_LOAD_BATCH_ON_DRIVER = db.DriverStatement.of(_LOAD_BATCH)


async def load_pending_batch(
    driver: db.Driver, campaign_id: uuid.UUID, batch_no: int
) -> list[Recipient]:
    """The batch's rows still ``pending``, in id order (see ``db.driver``)."""
    rows = await driver.fetch(
        _LOAD_BATCH_ON_DRIVER, {"campaign_id": campaign_id, "batch_no": batch_no}
    )
    return [
        Recipient(
            delivery_id=row[0],
            email=row[1],
            fields={
                "email": row[1],
                "name": row[2],
                "first_name": row[3],
                "last_name": row[4],
                "company": row[5],
                "title": row[6],
                "attributes": row[7] or {},
            },
            variant=row[8],
        )
        for row in rows
    ]


# A handled batch in one statement, so the campaign row is locked only from the
# release to the statement's end (every sender's record of a campaign queues on
# that lock): the batch's rows still ``pending`` move to sent or failed, the
# counters move with them, and the next batch with pending rows past the window
# is handed to Kafka through the outbox. That keeps at most a window of each
# campaign's batches in the topic, so campaigns interleave fairly, and
# pause/cancel take effect within a window. The next batch is the first pending
# row past the cursor in the pending index: one entry read, where probing every
# batch number left and sorting what was found read one entry per remaining
# batch (a thousand on average for 200,000 recipients, more for larger
# campaigns). Locks are taken in the order rows, counters, campaign
# (``campaign`` reads ``counted`` for that). This statement writes the outbox
# row itself, so that recording a batch stays one round trip: the next batch's
# number is only known inside it. Its payload is therefore spliced from the
# encoded event around the batch and round numbers (``_batch_payload_parts``,
# the one place that knows the cut); the row comes back and joins the caller's
# unit of work (``outbox.register``).
_RECORD_AND_RELEASE = db.DriverStatement.of(
    text("""
WITH sent AS (
    UPDATE campaign_deliveries d
    SET status = 'sent', provider_message_id = v.message_id, sent_at = now(),
        attempts = d.attempts + 1, last_error = NULL
    FROM unnest(CAST(:ids AS bigint[]), CAST(:message_ids AS text[])) AS v(id, message_id)
    WHERE d.id = v.id AND d.status = 'pending'
    RETURNING 1
), failed AS (
    UPDATE campaign_deliveries d
    SET status = 'failed', last_error = v.error, attempts = d.attempts + 1
    FROM unnest(CAST(:failed_ids AS bigint[]), CAST(:errors AS text[])) AS v(id, error)
    WHERE d.id = v.id AND d.status = 'pending'
    RETURNING 1
), moved AS (
    SELECT (SELECT count(*) FROM sent) AS sent, (SELECT count(*) FROM failed) AS failed
), counted AS (
    INSERT INTO campaign_stats (campaign_id, shard, pending, sent, failed)
    SELECT CAST(:campaign_id AS uuid), CAST(:shard AS int), -(sent + failed), sent, failed
    FROM moved WHERE sent + failed > 0
    ON CONFLICT (campaign_id, shard) DO UPDATE SET
        pending = campaign_stats.pending + EXCLUDED.pending,
        sent = campaign_stats.sent + EXCLUDED.sent,
        failed = campaign_stats.failed + EXCLUDED.failed
    RETURNING 1
), campaign AS (
    SELECT enqueue_cursor, batch_count, send_round FROM campaigns
    WHERE id = :campaign_id AND status = ANY(CAST(:sending AS text[]))
      AND (SELECT count(*) FROM counted) >= 0
    FOR UPDATE
), next AS (
    SELECT d.batch_no AS n, campaign.send_round
    FROM campaign CROSS JOIN LATERAL (
        SELECT batch_no FROM campaign_deliveries
        WHERE campaign_id = :campaign_id AND batch_no > campaign.enqueue_cursor
          AND batch_no < campaign.batch_count AND status = 'pending'
        ORDER BY batch_no
        LIMIT 1
    ) d
), progress AS (
    UPDATE campaigns
    SET last_progress_at = now(), enqueue_cursor = coalesce((SELECT n FROM next), enqueue_cursor)
    WHERE id = :campaign_id AND EXISTS (SELECT 1 FROM campaign)
), released AS (
    INSERT INTO outbox (topic, key, payload)
    SELECT :topic, :key_prefix || n::text,
           CAST(:head AS bytea) || convert_to(n::text, 'UTF8') || CAST(:middle AS bytea)
           || convert_to(send_round::text, 'UTF8') || CAST(:tail AS bytea)
    FROM next
    RETURNING id, topic, key, payload
)
SELECT moved.sent, moved.failed, released.id AS outbox_id, released.topic, released.key,
       released.payload
FROM moved LEFT JOIN released ON true
""")
)


@functools.lru_cache(maxsize=256)  # once per campaign, not per batch
def _batch_payload_parts(campaign_id: uuid.UUID) -> tuple[bytes, bytes, bytes]:
    """``CampaignBatch(...).to_bytes()`` cut around ``batch_no`` and ``send_round``."""
    sample = CampaignBatch(campaign_id=campaign_id, batch_no=0, send_round=0).to_bytes()
    head, rest = sample.split(b'"batch_no":0', 1)
    middle, tail = rest.split(b'"send_round":0', 1)
    return head + b'"batch_no":', middle + b'"send_round":', tail


# Rows cancelled while their batch was with the provider were sent all the same.
_MARK_CANCELLED_SENT = db.DriverStatement.of(
    text("""
WITH moved AS (
    UPDATE campaign_deliveries d
    SET status = 'sent', provider_message_id = v.message_id, sent_at = now(),
        attempts = d.attempts + 1, last_error = NULL
    FROM unnest(CAST(:ids AS bigint[]), CAST(:message_ids AS text[])) AS v(id, message_id)
    WHERE d.id = v.id AND d.status = 'cancelled'
    RETURNING 1
), counted AS (
    INSERT INTO campaign_stats (campaign_id, shard, cancelled, sent)
    SELECT CAST(:campaign_id AS uuid), CAST(:shard AS int), -count(*), count(*)
    FROM moved HAVING count(*) > 0
    ON CONFLICT (campaign_id, shard) DO UPDATE SET
        cancelled = campaign_stats.cancelled + EXCLUDED.cancelled,
        sent = campaign_stats.sent + EXCLUDED.sent
)
SELECT count(*) FROM moved
""")
)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What recording a batch changed: rows that moved, whether a next batch was released."""

    sent: int
    failed: int
    released: bool


async def record_batch_outcome(
    driver: db.Driver,
    campaign_id: uuid.UUID,
    batch_no: int,
    sent: Sequence[tuple[int, str]],
    failed: Sequence[tuple[int, str]],
) -> BatchOutcome:
    """Move rows still ``pending`` to sent/failed, count only the rows that moved, and
    release the next batch (see ``_RECORD_AND_RELEASE``), whose outbox row joins the
    driver's unit of work (``outbox.UnitOfWork.driver``).

    A batch handled twice moves nothing the second time, so counters stay right.
    Each statement is atomic on its own and commits alone (``db.driver``): the
    common batch is one round trip, and the campaign row is locked only while
    that statement runs.
    """
    sent_ids, message_ids = zip(*sent, strict=True) if sent else ((), ())
    failed_ids, errors = zip(*failed, strict=True) if failed else ((), ())
    head, middle, tail = _batch_payload_parts(campaign_id)
    (row,) = await driver.fetch(
        _RECORD_AND_RELEASE,
        {
            "ids": list(sent_ids),
            "message_ids": list(message_ids),
            "failed_ids": list(failed_ids),
            "errors": list(errors),
            "campaign_id": campaign_id,
            "shard": counters.shard_of(batch_no),
            "sending": SENDS,
            "topic": TOPIC_CAMPAIGN_BATCHES,
            "key_prefix": f"{campaign_id}:",
            "head": head,
            "middle": middle,
            "tail": tail,
        },
    )
    n_sent = int(row["sent"])
    if n_sent < len(sent):
        # A row cancelled while its batch was with the provider was sent all the
        # same, so it becomes ``sent`` too. A later statement sees the cancel that
        # made the first one pass the row by (cancelled rows never go back), and
        # the common batch needs no locking read to learn what its rows were. A
        # crash between the two leaves such a row ``cancelled``, counted once.
        (cancelled,) = await driver.fetch(
            _MARK_CANCELLED_SENT,
            {
                "ids": list(sent_ids),
                "message_ids": list(message_ids),
                "campaign_id": campaign_id,
                "shard": counters.shard_of(batch_no),
            },
        )
        n_sent += int(cancelled[0])
    released = row["outbox_id"] is not None
    if released:
        outbox.register(
            driver, [OutboxRow(row["outbox_id"], row["topic"], row["key"], row["payload"])]
        )
    return BatchOutcome(sent=n_sent, failed=int(row["failed"]), released=released)


async def lock_template_decision(
    session: AsyncSession, campaign_id: uuid.UUID
) -> tuple[str | None, str | None]:
    """The campaign's status and provider template decision (migration 0012), read under
    a lock that makes other deciders wait until this transaction ends."""
    key = func.hashtextextended(f"provider-template:{campaign_id}", 0)
    await session.execute(select(func.pg_advisory_xact_lock(key)))
    row = (
        await session.execute(
            select(Campaign.status, Campaign.provider_template_id).where(Campaign.id == campaign_id)
        )
    ).first()
    return (None, None) if row is None else (row.status, row.provider_template_id)


async def set_template_decision(
    session: AsyncSession, campaign_id: uuid.UUID, template_id: str
) -> None:
    """Record how this round sends: a template's id, or '' for whole bodies."""
    await session.execute(
        update(Campaign).where(Campaign.id == campaign_id).values(provider_template_id=template_id)
    )


async def reserve_hourly_sends(
    session: AsyncSession, sponsor_id: str, count: int, cap: int
) -> bool:
    """Take ``count`` sends from the sponsor's hourly cap; False when the hour is full."""
    reserved = await session.scalar(
        text("""
INSERT INTO sponsor_hourly_sends (sponsor_id, hour_start, sent)
VALUES (:sponsor_id, date_trunc('hour', now()), :count)
ON CONFLICT (sponsor_id, hour_start) DO UPDATE
    SET sent = sponsor_hourly_sends.sent + EXCLUDED.sent
    WHERE sponsor_hourly_sends.sent + EXCLUDED.sent <= :cap
RETURNING sent
"""),
        {"sponsor_id": sponsor_id, "count": count, "cap": cap},
    )
    return reserved is not None
