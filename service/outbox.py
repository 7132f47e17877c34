"""The transactional outbox: Kafka messages written with the state they announce.

Writers insert rows in their own transaction, then call ``publish`` after the
commit for a fast path. Whatever that misses (a broker outage, a crash) the
relay publishes later with ``publish_stale``. Consumers are idempotent, so a
row published twice does no harm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import BigInteger, any_, bindparam, delete, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from service import db
from service.kafka import Producer
from service.models import OutboxMessage, table_of

log = logging.getLogger(__name__)

outbox = table_of(OutboxMessage)


class OutboxRow(NamedTuple):
    """A committed outbox row in hand, as the statement that wrote it returned it."""

    id: int
    topic: str
    key: str
    payload: bytes


def _ids(ids: Sequence[int]) -> ColumnElement[bool]:
    """``id = ANY(:ids)``: one array parameter however many ids there are."""
    return outbox.c.id == any_(bindparam("ids", list(ids), type_=ARRAY(BigInteger)))


async def add(session: AsyncSession, topic: str, key: str, payload: bytes) -> int:
    """Queue one message in the caller's transaction; returns its outbox id."""
    row_id = await session.scalar(
        insert(outbox).values(topic=topic, key=key, payload=payload).returning(outbox.c.id)
    )
    assert row_id is not None
    return int(row_id)


async def publish(
    sessions: async_sessionmaker[AsyncSession], producer: Producer, ids: Sequence[int]
) -> bool:
    """Produce the given committed rows and delete them; False if the broker failed.

    A failure is not an error for the caller: the rows stay and the relay retries.
    """
    if not ids:
        return True
    # One statement takes the rows (skipping any the relay holds) and deletes them;
    # the delete commits only once the broker has acknowledged.
    claimed = select(outbox.c.id).where(_ids(ids)).with_for_update(skip_locked=True)
    async with sessions() as session:
        transaction = await session.begin()
        rows = (
            await session.execute(
                delete(outbox)
                .where(outbox.c.id.in_(claimed))
                .returning(outbox.c.topic, outbox.c.key, outbox.c.payload)
            )
        ).all()
        try:
            await producer.send((row.topic, row.key, row.payload) for row in rows)
        except Exception as exc:
            await transaction.rollback()
            log.warning("outbox publish failed; the relay will retry: %s", exc)
            return False
        await transaction.commit()
    return True


_DELETE = db.DriverStatement.of(text("DELETE FROM outbox WHERE id = ANY(CAST(:ids AS bigint[]))"))


async def publish_rows(
    sessions: async_sessionmaker[AsyncSession], producer: Producer, rows: Sequence[OutboxRow]
) -> bool:
    """Produce committed rows the caller holds, then delete them; False if the broker failed.

    Cheaper than ``publish``: no transaction and no claim, the rows are not read
    again, and the delete is one statement that commits alone. A row the relay
    publishes meanwhile (it waits until a row is stale) goes out twice, which
    consumers tolerate. A failure is not an error for the caller: the rows stay
    and the relay retries.
    """
    if not rows:
        return True
    try:
        await producer.send((row.topic, row.key, row.payload) for row in rows)
    except Exception as exc:
        log.warning("outbox publish failed; the relay will retry: %s", exc)
        return False
    async with db.driver(sessions) as driver:
        await driver.fetch(_DELETE, {"ids": [row.id for row in rows]})
    return True


async def publish_stale(
    sessions: async_sessionmaker[AsyncSession],
    producer: Producer,
    older_than_seconds: float,
    limit: int = 5000,
) -> int:
    """Publish rows the fast path left behind; returns how many were published."""
    async with sessions.begin() as session:
        rows = (
            await session.execute(
                select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload)
                .where(
                    outbox.c.created_at
                    < text("now() - make_interval(secs => :age)").bindparams(age=older_than_seconds)
                )
                .order_by(outbox.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return 0
        await producer.send((row.topic, row.key, row.payload) for row in rows)
        await session.execute(delete(outbox).where(_ids([row.id for row in rows])))
    return len(rows)
