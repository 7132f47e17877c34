"""Partition upkeep, run by the relay's leader every ``RETENTION_INTERVAL_SECONDS``.

``campaign_deliveries`` is range-partitioned by id (ids grow with time, and a
lookup by id reaches one partition); ``delivery_events`` by ``occurred_at``, a
partition a day. Each run, in one transaction:

1. creates partitions ahead: ``DELIVERY_PARTITIONS_AHEAD`` ranges of
   ``DELIVERY_PARTITION_SIZE`` ids past the next id, and days up to
   ``EVENT_DAYS_AHEAD`` from now, so rows land in the default partition only
   when a campaign outruns them (they move into their range when it is made);
2. stamps the delivery partitions whose ids are all handed out with the time,
   which no row in them can be newer than;
3. drops the partitions older than ``RETENTION_DAYS`` (written first to
   ``RETENTION_ARCHIVE_DIR`` when set), except a delivery partition that still
   has ``pending`` rows (a campaign paused that long still sends them);
4. deletes old stragglers from the default partitions;
5. deletes the audience change log's rows older than a day (the in-memory
   audience index has read them long before: ``service/audiences/live.py``);
6. deletes the replies and conversions kept for the digests
   (``digest_events``) older than ``DIGEST_EVENTS_RETENTION_DAYS``;
7. deletes the transactional messages older than ``RETENTION_DAYS`` that are
   done (with their events), the trigger firings as old, and the idempotency
   keys past their 24 hours.

See docs/operations.md, "Retention and partitions".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from service.audiences import live as live_counts
from service.digests import repository as digests
from service.messages import repository as messages
from service.retention import repository
from service.retention.repository import DELIVERIES, EVENTS
from service.settings import Settings
from service.triggers import repository as triggers

DELIVERY_PARTITIONS_AHEAD = 2
EVENT_DAYS_AHEAD = 3


@dataclass
class Maintenance:
    created: list[str] = field(default_factory=list)
    moved: int = 0
    dropped: list[str] = field(default_factory=list)
    archived: list[Path] = field(default_factory=list)
    kept_pending: list[str] = field(default_factory=list)
    trimmed: int = 0
    audience_changes_pruned: int = 0
    digest_events_pruned: int = 0
    messages_pruned: int = 0
    firings_pruned: int = 0
    idempotency_keys_pruned: int = 0


async def maintain(
    session: AsyncSession, settings: Settings, now: datetime | None = None
) -> Maintenance:
    """One round of upkeep in the caller's transaction (see the module docstring)."""
    now = now or datetime.now(UTC)
    done = Maintenance()
    await repository.lock(session)
    await _deliveries_ahead(session, settings.delivery_partition_size, done)
    await _events_ahead(session, now, done)
    await repository.close_deliveries(session, await repository.next_delivery_id(session), now)
    cutoff = now - timedelta(days=settings.retention_days)
    for name, parent in await repository.expired(session, cutoff):
        if parent == DELIVERIES and await repository.has_pending(session, name):
            done.kept_pending.append(name)
            continue
        if settings.retention_archive_dir:
            directory = Path(settings.retention_archive_dir)
            done.archived.append(await repository.archive(session, name, directory))
        await repository.drop(session, name)
        done.dropped.append(name)
    done.trimmed = await repository.trim_defaults(session, cutoff)
    done.audience_changes_pruned = await live_counts.prune_changes(session, now)
    kept_since = now - timedelta(days=settings.digest_events_retention_days)
    done.digest_events_pruned = await digests.prune_events(session, kept_since)
    done.messages_pruned, done.idempotency_keys_pruned = await messages.prune(
        session, cutoff, now - messages.IDEMPOTENCY_WINDOW
    )
    done.firings_pruned = await triggers.prune_firings(session, cutoff)
    return done


async def _deliveries_ahead(session: AsyncSession, size: int, done: Maintenance) -> None:
    # Ranges stay contiguous from the highest one: ids a campaign took past the last
    # range wait in the default partition until their range exists, then move there.
    horizon = await repository.next_delivery_id(session) + size * DELIVERY_PARTITIONS_AHEAD
    low = await repository.highest_id(session)
    while low < horizon:
        name = f"{DELIVERIES}_{low}"
        done.moved += await repository.create_partition(
            session, DELIVERIES, name, (low, low + size)
        )
        done.created.append(name)
        low += size


async def _events_ahead(session: AsyncSession, now: datetime, done: Maintenance) -> None:
    low = await repository.highest_at(session)
    if low is None:  # no partition yet: start at today's midnight (UTC)
        low = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while low < now + timedelta(days=EVENT_DAYS_AHEAD):
        high = low + timedelta(days=1)
        name = f"{EVENTS}_{low.astimezone(UTC):%Y%m%d}"
        done.moved += await repository.create_partition(session, EVENTS, name, (low, high))
        done.created.append(name)
        low = high
