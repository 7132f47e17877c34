"""Every SQL statement about the send lanes' heartbeats."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# One round trip: this lane's heartbeat and whether the other lane beat lately.
# The database's clock on both sides, so hosts whose clocks differ agree.
_BEAT = text("""
WITH beat AS (
    INSERT INTO send_lanes (lane, seen_at) VALUES (:lane, now())
    ON CONFLICT (lane) DO UPDATE SET seen_at = EXCLUDED.seen_at
)
SELECT EXISTS (
    SELECT 1 FROM send_lanes
    WHERE lane = :other AND seen_at > now() - make_interval(secs => :busy_seconds)
)
""")


async def beat(session: AsyncSession, lane: str, other: str, busy_seconds: float) -> bool:
    """Mark ``lane`` busy now; whether ``other`` was busy in the last ``busy_seconds``."""
    found = await session.scalar(
        _BEAT, {"lane": lane, "other": other, "busy_seconds": busy_seconds}
    )
    return bool(found)
