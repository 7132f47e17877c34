"""SQL of the per-sponsor rate-limit counters (fixed one-minute windows in PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from service.models import ApiRateCounter, table_of

counters = table_of(ApiRateCounter)


async def hit(connection: AsyncConnection, sponsor_id: str, bucket: str) -> tuple[int, float]:
    """Count one request in the current minute: the new count and the seconds left in it.

    One upsert, so concurrent requests on any number of replicas all count.
    """
    window = func.date_trunc("minute", func.now())
    statement = (
        insert(counters)
        .values(sponsor_id=sponsor_id, bucket=bucket, window_start=window, hits=1)
        .on_conflict_do_update(
            index_elements=["sponsor_id", "bucket", "window_start"],
            set_={"hits": counters.c.hits + 1},
        )
        .returning(counters.c.hits, counters.c.window_start, func.now())
    )
    hits, window_start, now = (await connection.execute(statement)).one()
    if hits == 1:
        # A new window: the sponsor's old ones are no longer needed.
        await connection.execute(
            delete(counters).where(
                counters.c.sponsor_id == sponsor_id,
                counters.c.bucket == bucket,
                counters.c.window_start < window_start,
            )
        )
    left: float = 60.0 - (now - window_start).total_seconds()
    return int(hits), max(left, 0.0)
