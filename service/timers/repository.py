"""Every SQL statement about timers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A timer claimed by this transaction: deleted when it commits."""

    id: int
    kind: str
    key: str
    due_at: datetime
    payload: dict[str, Any]


_SCHEDULE = text("""
INSERT INTO timers (kind, key, due_at, payload)
VALUES (:kind, :key, :due_at, CAST(:payload AS jsonb))
ON CONFLICT (key) DO UPDATE
    SET kind = EXCLUDED.kind, due_at = EXCLUDED.due_at, payload = EXCLUDED.payload
""")


async def schedule(
    session: AsyncSession, kind: str, key: str, due_at: datetime, payload: dict[str, Any]
) -> None:
    """Set the timer ``key`` to fire at ``due_at``; one already set is moved."""
    await session.execute(
        _SCHEDULE,
        {"kind": kind, "key": key, "due_at": due_at, "payload": orjson.dumps(payload).decode()},
    )


_SCHEDULE_MANY = text("""
INSERT INTO timers (kind, key, due_at, payload)
SELECT :kind, key, due_at, CAST(payload AS jsonb)
FROM unnest(CAST(:keys AS text[]), CAST(:due AS timestamptz[]), CAST(:payloads AS text[]))
    AS t(key, due_at, payload)
ON CONFLICT (key) DO UPDATE
    SET kind = EXCLUDED.kind, due_at = EXCLUDED.due_at, payload = EXCLUDED.payload
""")


async def schedule_many(
    session: AsyncSession, kind: str, timers: Sequence[tuple[str, datetime, dict[str, Any]]]
) -> None:
    """``schedule`` for each (key, due_at, payload), in one statement."""
    if not timers:
        return
    await session.execute(
        _SCHEDULE_MANY,
        {
            "kind": kind,
            "keys": [key for key, _, _ in timers],
            "due": [due for _, due, _ in timers],
            "payloads": [orjson.dumps(payload).decode() for _, _, payload in timers],
        },
    )


async def cancel(session: AsyncSession, keys: Sequence[str]) -> None:
    """Remove the timers ``keys`` (those not set are no matter)."""
    await session.execute(
        text("DELETE FROM timers WHERE key = ANY(CAST(:keys AS text[]))"), {"keys": list(keys)}
    )


# A timer another transaction holds is skipped, not waited for: it is being fired.
# Deleted here, it is gone once the caller's transaction commits with its effect;
# if that rolls back (or the process dies), the row is back and fires later.
_CLAIM = text("""
DELETE FROM timers
WHERE id IN (
    SELECT id FROM timers
    WHERE due_at <= :now AND kind = ANY(CAST(:kinds AS text[]))
    ORDER BY due_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING id, kind, key, due_at, payload
""")


async def claim_due(
    session: AsyncSession, kinds: Sequence[str], now: datetime, limit: int
) -> list[DueTimer]:
    """Up to ``limit`` timers of ``kinds`` due at ``now``, locked for this transaction,
    earliest first."""
    params = {"kinds": list(kinds), "now": now, "limit": limit}
    rows = (await session.execute(_CLAIM, params)).all()
    timers = [DueTimer(r.id, r.kind, r.key, r.due_at, r.payload) for r in rows]
    return sorted(timers, key=lambda t: t.due_at)


async def explain_claim(session: AsyncSession, kinds: Sequence[str], now: datetime) -> str:
    """The plan of ``claim_due`` (run, then rolled back with the caller's transaction):
    the claim must walk the ``due_at`` index, not the table."""
    params = {"kinds": list(kinds), "now": now, "limit": 100}
    explain = text("EXPLAIN " + str(_CLAIM.text))
    return "\n".join(row[0] for row in await session.execute(explain, params))


async def due_at(session: AsyncSession, keys: Sequence[str]) -> dict[str, datetime]:
    """When each of ``keys`` that is set is due."""
    rows = await session.execute(
        text("SELECT key, due_at FROM timers WHERE key = ANY(CAST(:keys AS text[]))"),
        {"keys": list(keys)},
    )
    return {r.key: r.due_at for r in rows}
