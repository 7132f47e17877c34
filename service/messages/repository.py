"""Every SQL statement about message types, messages and their idempotency keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    any_,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import Label

from service import db
from service.errors import Conflict, NotFound
from service.models import (
    Message,
    MessageType,
    RecipientPreference,
    Sponsor,
    Template,
    TemplateVersion,
    table_of,
)


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


# Idempotency keys count this long; an older one is taken over by the next request.
_CLAIM = text("""
INSERT INTO message_idempotency_keys (sponsor_id, key, body_hash, message_ids)
VALUES (:sponsor_id, :key, :body_hash, CAST(:ids AS uuid[]))
ON CONFLICT (sponsor_id, key) DO UPDATE
    SET body_hash = EXCLUDED.body_hash, message_ids = EXCLUDED.message_ids, created_at = now()
    WHERE message_idempotency_keys.created_at < now() - interval '24 hours'
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
        _CLAIM, {**params, "body_hash": body_hash, "ids": [str(i) for i in ids]}
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


# The sender's statements: one round trip each per polled batch ------------------


async def latest_template(session: AsyncSession, template_id: uuid.UUID) -> TemplateVersion | None:
    """The latest version of a type's template (None if the template is gone)."""
    return await session.scalar(
        select(TemplateVersion)
        .join(Template, Template.id == TemplateVersion.template_id)
        .where(Template.id == template_id, TemplateVersion.version == Template.latest_version)
    )


# Marketing and notification messages honour every suppression that applies to
# the sponsor, except that a message of another preference category looks past a
# marketing opt-out made in the preference centre (source ``preferences``), so
# opting out of one category stops that one only; transactional messages honour
# only bounces, complaints and the global list.
_SUPPRESSED: Label[bool] = literal_column("""EXISTS (
    SELECT 1 FROM suppressions s
    WHERE s.email = messages.to_email
      AND (s.sponsor_id IS NULL
           OR (s.sponsor_id = messages.sponsor_id
               AND (coalesce(message_types.category, messages.template ->> 'category')
                        <> 'transactional'
                    OR s.reason IN ('hard_bounce', 'complaint'))
               AND NOT (coalesce(message_types.preference_category, 'marketing') <> 'marketing'
                        AND s.reason = 'unsubscribed'
                        AND coalesce(s.source, '') = 'preferences')))
)""").label("suppressed")

# The message's copies (cc, bcc) that the same rules stop, in the same round trip.
_BLOCKED: Label[list[str]] = literal_column("""ARRAY(
    SELECT DISTINCT s.email FROM suppressions s
    WHERE s.email = ANY(messages.cc || messages.bcc)
      AND (s.sponsor_id IS NULL
           OR (s.sponsor_id = messages.sponsor_id
               AND (coalesce(message_types.category, messages.template ->> 'category')
                        <> 'transactional'
                    OR s.reason IN ('hard_bounce', 'complaint'))
               AND NOT (coalesce(message_types.preference_category, 'marketing') <> 'marketing'
                        AND s.reason = 'unsubscribed'
                        AND coalesce(s.source, '') = 'preferences')))
)""").label("blocked")


@dataclass(frozen=True, slots=True)
class SendChecks:
    """What stands between a message and its recipient: suppressions, and the
    recipient's preference for the type's category (None: no row, the defaults)."""

    suppressed: bool
    opted_out: bool | None
    frequency: str | None
    format: str | None


@dataclass(frozen=True, slots=True)
class ToSend:
    """A ``queued`` message with what it is sent as, and what stands in its way."""

    message: Message
    message_type: MessageType | None  # None: a one-off message with its own template
    sponsor: Sponsor
    checks: SendChecks
    # Its copies that must not be sent (suppressed by the message's rules).
    blocked: frozenset[str] = frozenset()


async def messages_to_send(session: AsyncSession, message_ids: Sequence[uuid.UUID]) -> list[ToSend]:
    """Those of the messages still ``queued``, each with its type, sponsor, suppression
    and its recipient's preference for the type's category, in one round trip; with
    them every member still ``queued`` of a send batch one of them was claimed into,
    as a batch is sent again whole."""
    preference = RecipientPreference
    # An array computed once (an InitPlan), so each arm of the OR below is an index
    # scan: a subquery there would read every message instead.
    claimer = aliased(Message)
    claimed = func.array(
        select(claimer.send_batch)
        .where(
            claimer.id.in_(message_ids),
            claimer.status == "queued",
            claimer.send_batch.is_not(None),
        )
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            Message,
            MessageType,
            Sponsor,
            _SUPPRESSED,
            preference.opted_out,
            preference.frequency,
            preference.format,
            _BLOCKED,
        )
        .outerjoin(MessageType, MessageType.id == Message.type_id)
        .join(Sponsor, Sponsor.id == Message.sponsor_id)
        .outerjoin(
            preference,
            and_(
                preference.sponsor_id == Message.sponsor_id,
                preference.email == Message.to_email,
                preference.category == MessageType.preference_category,
            ),
        )
        .where(
            Message.status == "queued",
            or_(
                Message.id.in_(message_ids),
                and_(Message.send_batch.is_not(None), Message.send_batch == any_(claimed)),
            ),
        )
    )
    return [
        ToSend(
            row[0],
            row[1],
            row[2],
            SendChecks(bool(row[3]), row[4], row[5], row[6]),
            frozenset(row[7] or ()),
        )
        for row in rows
    ]


# Only rows still unclaimed: a message claimed by another copy meanwhile is that
# copy's batch (and is sent again with it, never in a second one). On the driver:
# it commits alone, one round trip, before the request it fixes.
_CLAIM_BATCHES = db.DriverStatement.of(
    text("""
UPDATE messages AS m SET send_batch = c.key
FROM unnest(CAST(:ids AS uuid[]), CAST(:keys AS text[])) AS c(id, key)
WHERE m.id = c.id AND m.status = 'queued' AND m.send_batch IS NULL
RETURNING m.id
""")
)


async def claim_send_batches(driver: db.Driver, keys: dict[uuid.UUID, str]) -> set[uuid.UUID]:
    """Claim each message into its send batch (message id → batch key), committed;
    the ids claimed."""
    if not keys:
        return set()
    rows = await driver.fetch(_CLAIM_BATCHES, {"ids": list(keys), "keys": list(keys.values())})
    return {uuid.UUID(str(row[0])) for row in rows}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a message: ``sent`` (with the provider's id), ``failed`` or
    ``suppressed`` (with the reason)."""

    message_id: uuid.UUID
    status: str
    provider_message_id: str | None = None
    error: str | None = None
    links: Sequence[str] = ()


# A provider event that overtook this (kept by the ingester as a first time
# while the row was still queued) decides the status a sent message starts in.
_RECORD = text("""
UPDATE messages AS m
SET status = CASE WHEN o.status <> 'sent' THEN o.status
                  WHEN m.complained_at IS NOT NULL THEN 'complained'
                  WHEN m.bounced_at IS NOT NULL THEN 'bounced'
                  WHEN m.clicked_at IS NOT NULL THEN 'clicked'
                  WHEN m.opened_at IS NOT NULL THEN 'opened'
                  WHEN m.delivered_at IS NOT NULL THEN 'delivered'
                  ELSE 'sent' END,
    provider_message_id = o.provider_message_id, last_error = o.error,
    links = CAST(o.links AS jsonb),
    sent_at = CASE WHEN o.status = 'sent' THEN now() END, updated_at = now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]),
            CAST(:provider_ids AS text[]), CAST(:errors AS text[]), CAST(:links AS text[]))
     AS o(id, status, provider_message_id, error, links)
WHERE m.id = o.id AND m.status = 'queued'
RETURNING m.id
""")


async def record_outcomes(session: AsyncSession, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
    """Move ``queued`` messages to their outcomes, each with the targets of its tracked
    links (by position); the ids moved (another copy may have recorded the rest)."""
    if not outcomes:
        return set()
    rows = await session.execute(
        _RECORD,
        {
            "ids": [o.message_id for o in outcomes],
            "statuses": [o.status for o in outcomes],
            "provider_ids": [o.provider_message_id for o in outcomes],
            "errors": [o.error for o in outcomes],
            "links": [orjson.dumps(list(o.links)).decode() for o in outcomes],
        },
    )
    return {row[0] for row in rows}


_NOTE_RETRY = text("""
UPDATE messages SET last_error = CAST(:error AS text), updated_at = now()
WHERE id = :id AND status = 'queued'
""")


async def note_retry(session: AsyncSession, message_id: uuid.UUID, error: str) -> None:
    """A message left ``queued`` for a later attempt: why it waits, shown as ``last_error``."""
    await session.execute(_NOTE_RETRY, {"id": message_id, "error": error})


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
