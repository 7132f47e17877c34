"""Every SQL statement about suppressions.

A suppression with ``sponsor_id`` NULL is global. Unique per (scope, email),
through the expression index ``uq_suppressions_scope_email``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from service.models import Suppression

_ADD = text("""
WITH new AS (
    INSERT INTO suppressions (sponsor_id, email, reason, source)
    VALUES (:sponsor_id, :email, :reason, :source)
    ON CONFLICT (coalesce(sponsor_id, ''), email) DO NOTHING
    RETURNING id
)
SELECT id, true AS created FROM new
UNION ALL
SELECT id, false FROM suppressions
WHERE coalesce(sponsor_id, '') = coalesce(CAST(:sponsor_id AS text), '') AND email = :email
  AND NOT EXISTS (SELECT 1 FROM new)
""")


def _scope(sponsor_id: str | None) -> ColumnElement[bool]:
    if sponsor_id is None:
        return Suppression.sponsor_id.is_(None)
    return Suppression.sponsor_id == sponsor_id


async def add(
    session: AsyncSession, sponsor_id: str | None, email: str, reason: str, source: str | None
) -> tuple[Suppression, bool]:
    """Suppress an address (idempotent); returns the row and whether it is new."""
    row = (
        await session.execute(
            _ADD,
            {"sponsor_id": sponsor_id, "email": email, "reason": reason, "source": source},
        )
    ).one()
    suppression = await session.get_one(Suppression, row.id)
    return suppression, bool(row.created)


async def remove(session: AsyncSession, sponsor_id: str | None, email: str) -> bool:
    result = await session.scalar(
        delete(Suppression)
        .where(_scope(sponsor_id), Suppression.email == email)
        .returning(Suppression.id)
    )
    return result is not None


async def list_page(
    session: AsyncSession, sponsor_id: str | None, *, limit: int, after_id: int | None
) -> list[Suppression]:
    query = select(Suppression).where(_scope(sponsor_id))
    if after_id is not None:
        query = query.where(Suppression.id > after_id)
    return list((await session.scalars(query.order_by(Suppression.id).limit(limit))).all())


async def stream_all(
    session: AsyncSession, sponsor_id: str | None, chunk: int = 5000
) -> AsyncIterator[list[Suppression]]:
    """Every suppression of the scope, in id order, ``chunk`` rows at a time."""
    after: int | None = None
    while True:
        rows = await list_page(session, sponsor_id, limit=chunk, after_id=after)
        if not rows:
            return
        yield rows
        after = rows[-1].id
