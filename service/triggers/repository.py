"""Every SQL statement about trigger rules and their firings."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import NotFound
from service.models import TriggerRule


async def get_rule(session: AsyncSession, sponsor_id: str, rule_id: uuid.UUID) -> TriggerRule:
    row = await session.scalar(
        select(TriggerRule).where(TriggerRule.id == rule_id, TriggerRule.sponsor_id == sponsor_id)
    )
    if row is None:
        raise NotFound("trigger_rule_not_found", f"no trigger rule '{rule_id}'", "rule_id")
    return row


async def list_rules(
    session: AsyncSession, sponsor_id: str, *, limit: int, after: uuid.UUID | None
) -> list[TriggerRule]:
    query = select(TriggerRule).where(TriggerRule.sponsor_id == sponsor_id)
    if after is not None:
        query = query.where(TriggerRule.id > after)
    return list((await session.scalars(query.order_by(TriggerRule.id).limit(limit))).all())


async def rule_named(session: AsyncSession, sponsor_id: str, name: str) -> TriggerRule | None:
    return await session.scalar(
        select(TriggerRule).where(TriggerRule.sponsor_id == sponsor_id, TriggerRule.name == name)
    )


async def add_rule(session: AsyncSession, rule: TriggerRule) -> None:
    session.add(rule)
    await session.flush()


async def delete_rule(session: AsyncSession, rule_id: uuid.UUID) -> None:
    await session.execute(delete(TriggerRule).where(TriggerRule.id == rule_id))


async def enabled_rules(
    session: AsyncSession, pairs: Iterable[tuple[str, str]]
) -> list[TriggerRule]:
    """The enabled rules of every (sponsor, topic) given, in one statement."""
    wanted = sorted(set(pairs))
    if not wanted:
        return []
    query = (
        select(TriggerRule)
        .where(tuple_(TriggerRule.sponsor_id, TriggerRule.topic).in_(wanted))
        .where(TriggerRule.enabled)
        .order_by(TriggerRule.created_at, TriggerRule.id)
    )
    return list((await session.scalars(query)).all())


# Each pair once: ON CONFLICT DO NOTHING also skips a pair repeated in the statement.
_FIRE = text("""
INSERT INTO trigger_firings (rule_id, event_id)
SELECT rule_id, event_id
FROM unnest(CAST(:rule_ids AS uuid[]), CAST(:event_ids AS text[])) AS f(rule_id, event_id)
ON CONFLICT DO NOTHING
RETURNING rule_id, event_id
""")


async def claim_firings(
    session: AsyncSession, pairs: Sequence[tuple[uuid.UUID, str]]
) -> set[tuple[uuid.UUID, str]]:
    """The (rule, firing key) pairs claimed now, in one statement; a pair claimed
    before is not among them."""
    if not pairs:
        return set()
    rows = await session.execute(
        _FIRE,
        {"rule_ids": [rule_id for rule_id, _ in pairs], "event_ids": [key for _, key in pairs]},
    )
    return {(row.rule_id, row.event_id) for row in rows}


async def prune_firings(session: AsyncSession, cutoff: datetime) -> int:
    """Delete the firings recorded before ``cutoff``; how many were. The topics keep
    their events for less than that (docs/operations.md): no replay brings one back."""
    result = await session.execute(
        text("DELETE FROM trigger_firings WHERE created_at < :cutoff"), {"cutoff": cutoff}
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
