"""Every SQL statement about recipient preferences and the messages held for a digest."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Message, RecipientPreference

# The source of the suppressions that stand for a marketing opt-out made here:
# messages of other categories look past them (``service/messages/sending_repository.py``).
SOURCE = "preferences"


async def rows(session: AsyncSession, sponsor_id: str, email: str) -> list[RecipientPreference]:
    found = await session.scalars(
        select(RecipientPreference).where(
            RecipientPreference.sponsor_id == sponsor_id, RecipientPreference.email == email
        )
    )
    return list(found.all())


_UNSUBSCRIBED = text("""
SELECT EXISTS (
    SELECT 1 FROM suppressions
    WHERE sponsor_id = :sponsor_id AND email = :email AND reason = 'unsubscribed'
)
""")


async def unsubscribed(session: AsyncSession, sponsor_id: str, email: str) -> bool:
    """Whether the sponsor holds a marketing opt-out (an ``unsubscribed`` suppression)."""
    found = await session.scalar(_UNSUBSCRIBED, {"sponsor_id": sponsor_id, "email": email})
    return bool(found)


# Fields left NULL keep the stored value (or the default, for a new row).
_UPSERT = text("""
INSERT INTO recipient_preferences (sponsor_id, email, category, opted_out, frequency, format)
VALUES (:sponsor_id, :email, :category, coalesce(:opted_out, false),
        coalesce(:frequency, 'immediately'), coalesce(:format, 'detailed'))
ON CONFLICT (sponsor_id, email, category) DO UPDATE SET
    opted_out = coalesce(:opted_out, recipient_preferences.opted_out),
    frequency = coalesce(:frequency, recipient_preferences.frequency),
    format = coalesce(:format, recipient_preferences.format),
    updated_at = now()
""")


async def upsert(
    session: AsyncSession, sponsor_id: str, email: str, category: str, changes: dict[str, Any]
) -> None:
    await session.execute(
        _UPSERT,
        {
            "sponsor_id": sponsor_id,
            "email": email,
            "category": category,
            "opted_out": changes.get("opted_out"),
            "frequency": changes.get("frequency"),
            "format": changes.get("format"),
        },
    )


_SUPPRESS = text("""
INSERT INTO suppressions (sponsor_id, email, reason, source)
VALUES (:sponsor_id, :email, 'unsubscribed', :source)
ON CONFLICT (coalesce(sponsor_id, ''), email) DO NOTHING
""")

_UNSUPPRESS = text("""
DELETE FROM suppressions
WHERE sponsor_id = :sponsor_id AND email = :email AND reason = 'unsubscribed'
""")


async def set_marketing_opt_out(
    session: AsyncSession, sponsor_id: str, email: str, opted_out: bool
) -> None:
    """Opt out: the sponsor's ``unsubscribed`` suppression; opt in: that one removed (a
    bounce or a complaint stays)."""
    params = {"sponsor_id": sponsor_id, "email": email}
    if opted_out:
        await session.execute(_SUPPRESS, {**params, "source": SOURCE})
    else:
        await session.execute(_UNSUPPRESS, params)


async def held_messages(
    session: AsyncSession,
    sponsor_id: str,
    *,
    limit: int,
    after: tuple[Any, uuid.UUID] | None = None,
    to: str | None = None,
) -> Sequence[Message]:
    """Messages held for a digest (status ``held``), oldest first, keyset-paged on
    (created_at, id): what a digest picks up, then moves on from."""
    query = select(Message).where(Message.sponsor_id == sponsor_id, Message.status == "held")
    if to is not None:
        query = query.where(Message.to_email == to)
    if after is not None:
        query = query.where(tuple_(Message.created_at, Message.id) > tuple_(*after))
    query = query.order_by(Message.created_at, Message.id).limit(limit)
    return (await session.scalars(query)).all()
