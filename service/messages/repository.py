"""The SQL about message types, messages and their idempotency keys that the API
and the schedule need; the sender's statements are in ``sending_repository``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, delete, insert, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.errors import Conflict, NotFound
from service.models import Message, MessageType, table_of


def _owned_by(sponsor_id: str | None) -> ColumnElement[bool]:
    """The sponsor's types; None: the platform-wide ones."""
    if sponsor_id is None:
        return MessageType.sponsor_id.is_(None)
    return MessageType.sponsor_id == sponsor_id


async def get_type(
    session: AsyncSession, sponsor_id: str | None, type_id: uuid.UUID
) -> MessageType:
    row = await session.scalar(
        select(MessageType).where(MessageType.id == type_id, _owned_by(sponsor_id))
    )
    if row is None:
        raise NotFound("message_type_not_found", f"no message type '{type_id}'", "type_id")
    return row


async def types_by_key(
    session: AsyncSession, sponsor_id: str, keys: Sequence[str], *, platform: bool = True
) -> dict[str, MessageType]:
    """The types of ``keys`` a sponsor sends: its own, else (``platform``) the
    platform-wide type of that key."""
    owners = or_(_owned_by(sponsor_id), _owned_by(None)) if platform else _owned_by(sponsor_id)
    rows = await session.scalars(select(MessageType).where(owners, MessageType.key.in_(keys)))
    found: dict[str, MessageType] = {}
    for row in rows:
        if row.sponsor_id is not None or row.key not in found:
            found[row.key] = row
    return found


async def list_types(
    session: AsyncSession, sponsor_id: str | None, *, limit: int, after: str | None
) -> list[MessageType]:
    query = select(MessageType).where(_owned_by(sponsor_id))
    if after is not None:
        query = query.where(MessageType.key > after)
    return list((await session.scalars(query.order_by(MessageType.key).limit(limit))).all())


async def add_type(session: AsyncSession, message_type: MessageType) -> None:
    """Insert; a key the sponsor already uses is a 409."""
    try:
        async with session.begin_nested():
            session.add(message_type)
            await session.flush()
    except IntegrityError:
        raise Conflict(
            "message_type_exists", f"a message type '{message_type.key}' exists", "key"
        ) from None


async def delete_type(session: AsyncSession, type_id: uuid.UUID) -> None:
    await session.execute(delete(MessageType).where(MessageType.id == type_id))


# Idempotency keys count this long; an older one is taken over by the next request,
# and the retention upkeep deletes it (``prune``).
IDEMPOTENCY_WINDOW = timedelta(hours=24)

_CLAIM = text("""
INSERT INTO message_idempotency_keys (sponsor_id, key, body_hash, message_ids)
VALUES (:sponsor_id, :key, :body_hash, CAST(:ids AS uuid[]))
ON CONFLICT (sponsor_id, key) DO UPDATE
    SET body_hash = EXCLUDED.body_hash, message_ids = EXCLUDED.message_ids, created_at = now()
    WHERE message_idempotency_keys.created_at < now() - CAST(:window AS interval)
RETURNING true
""")

_CLAIMED = text("""
SELECT body_hash, message_ids FROM message_idempotency_keys
WHERE sponsor_id = :sponsor_id AND key = :key
""")


async def claim_idempotency_key(
    session: AsyncSession, sponsor_id: str, key: str, body_hash: bytes, ids: Sequence[uuid.UUID]
) -> tuple[bytes, list[uuid.UUID]] | None:
    """None when this request now holds the key; else the (hash, ids) of the one that does.

    A concurrent request with the same key waits on the row lock until the
    first commits (then sees its row) or rolls back (then claims it).
    """
    params = {"sponsor_id": sponsor_id, "key": key}
    claimed = await session.scalar(
        _CLAIM,
        {
            **params,
            "body_hash": body_hash,
            "ids": [str(i) for i in ids],
            "window": IDEMPOTENCY_WINDOW,
        },
    )
    if claimed:
        return None
    row = (await session.execute(_CLAIMED, params)).one()
    return bytes(row.body_hash), list(row.message_ids)


async def add_messages(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """The messages of one request, in one statement."""
    await session.execute(insert(table_of(Message)), list(rows))


async def get_message(session: AsyncSession, sponsor_id: str, message_id: uuid.UUID) -> Message:
    row = await session.scalar(
        select(Message).where(Message.id == message_id, Message.sponsor_id == sponsor_id)
    )
    if row is None:
        raise NotFound("message_not_found", f"no message '{message_id}'", "message_id")
    return row


_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True, slots=True)
class MessageFilter:
    type: str | None = None
    to: str | None = None
    status: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


def _filtered(query: _Query, sponsor_id: str, where: MessageFilter) -> _Query:
    query = query.where(Message.sponsor_id == sponsor_id)
    if where.type is not None:
        query = query.where(Message.type_key == where.type)
    if where.to is not None:
        query = query.where(Message.to_email == where.to)
    if where.status is not None:
        query = query.where(Message.status == where.status)
    if where.since is not None:
        query = query.where(Message.created_at >= where.since)
    if where.until is not None:
        query = query.where(Message.created_at < where.until)
    return query


async def list_messages(
    session: AsyncSession,
    sponsor_id: str,
    where: MessageFilter,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Message]:
    """Newest first, keyset-paged on (created_at, id)."""
    query = _filtered(select(Message), sponsor_id, where)
    if after is not None:
        created_at, row_id = after
        query = query.where(
            or_(
                Message.created_at < created_at,
                and_(Message.created_at == created_at, Message.id < row_id),
            )
        )
    query = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def stream_messages(
    engine: AsyncEngine, sponsor_id: str, where: MessageFilter, chunk: int = 5000
) -> AsyncIterator[Sequence[Any]]:
    """The CSV's columns of every message the filter selects, newest first, ``chunk``
    rows at a time from a server-side cursor."""
    m = Message
    columns = (
        m.id, m.type_key, m.to_email, m.status, m.provider_message_id, m.last_error,
        m.created_at, m.sent_at, m.delivered_at, m.opened_at, m.clicked_at, m.bounced_at,
        m.complained_at,
    )  # fmt: skip
    query = _filtered(select(*columns), sponsor_id, where).order_by(
        m.created_at.desc(), m.id.desc()
    )
    async with engine.connect() as connection:
        result = await connection.stream(query.execution_options(yield_per=chunk))
        async for rows in result.partitions(chunk):
            yield rows


_MOVE_SCHEDULED = text("""
UPDATE messages SET status = CAST(:status AS text), updated_at = now()
WHERE id = :id AND status = 'scheduled'
RETURNING sponsor_id
""")


_QUEUE_DUE = text("""
UPDATE messages SET status = 'queued', updated_at = now()
WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'scheduled'
RETURNING id, sponsor_id
""")


async def queue_due(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, str]]:
    """Move the ``scheduled`` messages of ``ids`` to ``queued``; (id, sponsor) of each moved."""
    rows = await session.execute(_QUEUE_DUE, {"ids": [str(i) for i in ids]})
    return [(row.id, row.sponsor_id) for row in rows]


async def move_scheduled(session: AsyncSession, message_id: uuid.UUID, status: str) -> str | None:
    """Move a ``scheduled`` message to ``status``; its sponsor, or None if it was not scheduled."""
    sponsor_id: str | None = await session.scalar(
        _MOVE_SCHEDULED, {"id": message_id, "status": status}
    )
    return sponsor_id


async def prune(session: AsyncSession, cutoff: datetime, keys_cutoff: datetime) -> tuple[int, int]:
    """Delete the messages created before ``cutoff`` that are done (their events go
    with them), and the idempotency keys claimed before ``keys_cutoff``; how many of each.

    A message still ``scheduled``, ``queued`` or ``held`` stays whatever its age.
    """
    messages = await session.execute(
        text(
            "DELETE FROM messages WHERE created_at < :cutoff "
            "AND status NOT IN ('scheduled', 'queued', 'held')"
        ),
        {"cutoff": cutoff},
    )
    keys = await session.execute(
        text("DELETE FROM message_idempotency_keys WHERE created_at < :cutoff"),
        {"cutoff": keys_cutoff},
    )
    return int(messages.rowcount), int(keys.rowcount)  # type: ignore[attr-defined]
