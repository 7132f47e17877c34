"""Campaign counters: the shard formula, adding to counters and summing them.

A campaign's counters live in ``campaign_stats``, one row per shard, so that
senders and ingesters working on different batches of one campaign do not
queue on one row lock. A delivery's shard is a function of its batch number
only (``shard_of``): every statement that moves a delivery's status adds to
the same row, and a campaign's figure is the sum over at most ``STATS_SHARDS``
rows. SQL written as text uses ``shard_sql`` so the formula is written once.
Hourly buckets (``campaign_stats_hourly``) are keyed by time instead and need
no shard.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import CampaignStats, table_of

STATS_SHARDS = 16

# Every counter column of ``campaign_stats`` (and, by name, of the hourly table).
COLUMNS = frozenset(
    {
        "pending", "sent", "failed", "suppressed", "cancelled", "delivered", "bounced",
        "complained", "unsubscribed", "opened", "opens", "human_opened", "clicked", "clicks",
        "human_clicked", "human_opens", "human_clicks",
    }
)  # fmt: skip

# The counters the sending side reads back (planning, auto-pause, finishing).
SENDING = ("pending", "sent", "failed", "suppressed", "cancelled")

Deltas = Mapping[tuple[uuid.UUID, Any], Mapping[str, int]]


def shard_of(batch_no: int) -> int:
    """The ``campaign_stats`` shard of a delivery in batch ``batch_no``."""
    return batch_no % STATS_SHARDS


def shard_sql(batch_no: str) -> str:
    """``shard_of`` as SQL over the column or expression ``batch_no``."""
    return f"{batch_no} % {STATS_SHARDS}"


def shard_expression(batch_no: ColumnElement[int]) -> ColumnElement[int]:
    """``shard_of`` as a SQLAlchemy expression."""
    return batch_no % STATS_SHARDS


def sums_sql(alias: str, names: Sequence[str]) -> str:
    """A select list summing each counter of ``names`` over the shards of ``alias``."""
    assert COLUMNS.issuperset(names)
    return ", ".join(f"coalesce(sum({alias}.{name}), 0)::bigint AS {name}" for name in names)


async def bump(session: AsyncSession, deltas: Deltas) -> None:
    """Add to ``campaign_stats`` counters, keyed by (campaign, ``shard_of(batch_no)``)."""
    await _bump(session, "campaign_stats", "shard", "smallint", deltas)


async def bump_hourly(
    session: AsyncSession, deltas: Mapping[tuple[uuid.UUID, datetime], Mapping[str, int]]
) -> None:
    """Add to ``campaign_stats_hourly`` counters, keyed by (campaign, hour)."""
    await _bump(session, "campaign_stats_hourly", "bucket", "timestamptz", deltas)


async def _bump(session: AsyncSession, table: str, key: str, key_type: str, deltas: Deltas) -> None:
    """One upsert for every row and column of ``deltas`` (zeros left out)."""
    rows = [(k, {c: n for c, n in v.items() if n}) for k, v in deltas.items()]
    rows = [(k, v) for k, v in rows if v]
    if not rows:
        return
    columns = sorted({c for _, v in rows for c in v})
    assert COLUMNS.issuperset(columns)
    params: dict[str, Any] = {
        "campaigns": [k[0] for k, _ in rows],
        "keys": [k[1] for k, _ in rows],
    }
    for i, column in enumerate(columns):
        params[f"c{i}"] = [v.get(column, 0) for _, v in rows]
    arrays = ", ".join(f"CAST(:c{i} AS bigint[])" for i in range(len(columns)))
    names = ", ".join(columns)
    updates = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in columns)
    # Column and table names come from the whitelist above, never from input.
    statement = text(f"""
INSERT INTO {table} (campaign_id, {key}, {names})
SELECT * FROM unnest(CAST(:campaigns AS uuid[]), CAST(:keys AS {key_type}[]), {arrays})
ON CONFLICT (campaign_id, {key}) DO UPDATE SET {updates}
""")  # noqa: S608
    await session.execute(statement, params)


async def sums(session: AsyncSession, campaign_id: uuid.UUID) -> dict[str, int]:
    """The campaign's sending counters, summed over its shards."""
    stats = table_of(CampaignStats)
    row = (
        await session.execute(
            select(*(func.coalesce(func.sum(stats.c[c]), 0) for c in SENDING)).where(
                stats.c.campaign_id == campaign_id
            )
        )
    ).one()
    return {name: int(value) for name, value in zip(SENDING, row, strict=True)}
