"""Every SQL statement about partitions: the catalog, creating, closing, archiving, dropping.

Partition names and bounds are built here from integers and timestamps this
module computed, never from input: DDL takes no bound parameters.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

DELIVERIES = "campaign_deliveries"
EVENTS = "delivery_events"
# One maintainer at a time, also outside the relay (tests, a manual run).
_LOCK_KEY = 0x72657465  # "rete"
LOCK_TIMEOUT_MS = 500


async def lock(session: AsyncSession) -> None:
    """Take the maintainer's lock, and make the upkeep give way to traffic.

    Creating or dropping a partition locks its parent strongly (and, through the
    foreign key, ``campaigns``); waiting for those locks would queue every writer
    behind the upkeep, or deadlock with a writer that holds one and wants the
    other. A short lock timeout makes the upkeep fail instead; the next round
    tries again, and rows meanwhile land in the default partitions.
    """
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))


async def next_delivery_id(session: AsyncSession) -> int:
    """The id the next planned delivery will get (every id below it is handed out)."""
    value = await session.scalar(
        text(
            "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
            "FROM campaign_deliveries_id_seq"
        )
    )
    return int(value)


async def highest_id(session: AsyncSession) -> int:
    value = await session.scalar(
        text("SELECT max(high_id) FROM table_partitions WHERE parent = :p"), {"p": DELIVERIES}
    )
    return int(value or 1)


async def highest_at(session: AsyncSession) -> datetime | None:
    value: datetime | None = await session.scalar(
        text("SELECT max(high_at) FROM table_partitions WHERE parent = :p"), {"p": EVENTS}
    )
    return value


async def create_partition(
    session: AsyncSession,
    parent: str,
    name: str,
    bounds: tuple[int, int] | tuple[datetime, datetime],
) -> int:
    """Create ``name`` for [low, high) of ``parent``'s key; returns the rows it took over
    from the default partition (rows that arrived before their range existed)."""
    key = "id" if parent == DELIVERIES else "occurred_at"
    low, high = (_literal(b) for b in bounds)
    in_range = f"{key} >= {low} AND {key} < {high}"
    # A range cannot be created while the default partition holds rows of it.
    moved = 0
    exists = text(f"SELECT EXISTS (SELECT 1 FROM {parent}_default WHERE {in_range})")  # noqa: S608
    if await session.scalar(exists):
        await session.execute(text(f"CREATE TEMP TABLE moving (LIKE {parent}) ON COMMIT DROP"))
        result = await session.execute(
            text(
                f"WITH m AS (DELETE FROM {parent}_default WHERE {in_range} RETURNING *) "  # noqa: S608
                "INSERT INTO moving SELECT * FROM m"
            )
        )
        moved = int(result.rowcount)  # type: ignore[attr-defined]
    await session.execute(
        text(f"CREATE TABLE {name} PARTITION OF {parent} FOR VALUES FROM ({low}) TO ({high})")
    )
    if parent == DELIVERIES:
        # The parent cannot hold a unique key without the partition key; each partition can.
        await session.execute(
            text(f"CREATE UNIQUE INDEX {name}_campaign_lead ON {name} (campaign_id, lead_id)")
        )
    if moved:
        await session.execute(text(f"INSERT INTO {parent} SELECT * FROM moving"))  # noqa: S608
        await session.execute(text("DROP TABLE moving"))
    ids = parent == DELIVERIES
    await session.execute(
        text("""
INSERT INTO table_partitions (name, parent, low_id, high_id, low_at, high_at, newest_at)
VALUES (:name, :parent, :low_id, :high_id, :low_at, :high_at, :newest_at)
"""),
        {
            "name": name,
            "parent": parent,
            "low_id": bounds[0] if ids else None,
            "high_id": bounds[1] if ids else None,
            "low_at": None if ids else bounds[0],
            "high_at": None if ids else bounds[1],
            # Every event of a day partition happened before its end.
            "newest_at": None if ids else bounds[1],
        },
    )
    return moved


def _literal(bound: int | datetime) -> str:
    return str(int(bound)) if isinstance(bound, int) else f"'{bound.isoformat()}'"


async def close_deliveries(session: AsyncSession, next_id: int, now: datetime) -> None:
    """Stamp the delivery partitions whose ids are all handed out: every row in them was
    written by now (an insert still running took its id, and its time, before now)."""
    await session.execute(
        text("""
UPDATE table_partitions SET newest_at = :now
WHERE parent = :p AND newest_at IS NULL AND high_id <= :next_id
"""),
        {"p": DELIVERIES, "now": now, "next_id": next_id},
    )


async def expired(session: AsyncSession, cutoff: datetime) -> list[tuple[str, str]]:
    """(name, parent) of partitions whose newest row is older than ``cutoff``, oldest first."""
    rows = await session.execute(
        text(
            "SELECT name, parent FROM table_partitions WHERE newest_at < :cutoff "
            "ORDER BY newest_at, name"
        ),
        {"cutoff": cutoff},
    )
    return [(row[0], row[1]) for row in rows]


async def has_pending(session: AsyncSession, name: str) -> bool:
    """Whether a delivery partition still has rows to send (through its pending index)."""
    found = await session.scalar(
        text(f"SELECT EXISTS (SELECT 1 FROM {name} WHERE status = 'pending')")  # noqa: S608
    )
    return bool(found)


async def archive(session: AsyncSession, name: str, directory: Path) -> Path:
    """Write the partition to ``directory/<name>.csv`` (with a header), whole or not at all."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    path = directory / f"{name}.csv"
    partial = directory / f".{name}.csv.partial"
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await driver.copy_from_table(name, output=str(partial), format="csv", header=True)
    os.replace(partial, path)
    return path


async def drop(session: AsyncSession, name: str) -> None:
    await session.execute(text(f"DROP TABLE {name}"))
    await session.execute(text("DELETE FROM table_partitions WHERE name = :n"), {"n": name})


async def trim_defaults(session: AsyncSession, cutoff: datetime) -> int:
    """Delete old rows from the default partitions (stragglers; normally none)."""
    deliveries = await session.execute(
        text(
            f"DELETE FROM {DELIVERIES}_default "  # noqa: S608
            "WHERE created_at < :cutoff AND status <> 'pending'"
        ),
        {"cutoff": cutoff},
    )
    events = await session.execute(
        text(f"DELETE FROM {EVENTS}_default WHERE occurred_at < :cutoff"),  # noqa: S608
        {"cutoff": cutoff},
    )
    return int(deliveries.rowcount) + int(events.rowcount)  # type: ignore[attr-defined]
