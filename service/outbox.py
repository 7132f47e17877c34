"""The transactional outbox, and the unit of work that publishes it.

A message is written as an outbox row in the same transaction as the state it
announces (``add``), so the two commit or roll back together. A unit of work,
an API request or one step of a worker, runs its transactions through
``UnitOfWork.transaction``; each collects the rows its session wrote, and
once the work is done the rows of the transactions that committed are
published and deleted (``unit_of_work``). Rows of a rolled back transaction
are gone with it. Whatever the fast path misses (a broker outage, a crash
between commit and publish) the relay publishes later with ``publish_stale``.
Consumers are idempotent, so a row published twice does no harm.

A session outside a unit of work may still write rows: the relay publishes them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple

from sqlalchemy import BigInteger, any_, bindparam, delete, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from service import db
from service.kafka import Producer
from service.models import OutboxMessage, table_of

log = logging.getLogger(__name__)

outbox = table_of(OutboxMessage)

# A message to write: (topic, key, payload).
Message = tuple[str, str, bytes]

# Where a session in a unit of work keeps the rows it wrote (``Session.info``).
_WRITTEN = "outbox_written"


class OutboxRow(NamedTuple):
    """An outbox row in hand, as it was written."""

    id: int
    topic: str
    key: str
    payload: bytes


def _ids(ids: Sequence[int]) -> ColumnElement[bool]:
    """``id = ANY(:ids)``: one array parameter however many ids there are."""
    return outbox.c.id == any_(bindparam("ids", list(ids), type_=ARRAY(BigInteger)))


# One statement however many messages; ids come back in the order of the arrays.
_INSERT = text("""
INSERT INTO outbox (topic, key, payload)
SELECT topic, key, payload
FROM unnest(CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:payloads AS bytea[]))
     WITH ORDINALITY AS m(topic, key, payload, n)
ORDER BY n
RETURNING id
""")


async def add(session: AsyncSession, messages: Iterable[Message]) -> None:
    """Write messages in the caller's transaction, for its unit of work to publish.

    The one place that inserts outbox rows, but for the sender's release of the
    next batch, which a larger statement writes and hands to ``register``.
    """
    rows = list(messages)
    if not rows:
        return
    topics, keys, payloads = (list(column) for column in zip(*rows, strict=True))
    ids = (
        await session.scalars(_INSERT, {"topics": topics, "keys": keys, "payloads": payloads})
    ).all()
    register(session, [OutboxRow(int(i), *row) for i, row in zip(ids, rows, strict=True)])


def register(writer: AsyncSession | db.Driver, rows: Iterable[OutboxRow]) -> None:
    """Hand rows a session or driver wrote to its unit of work (none: the relay
    publishes them)."""
    written: list[OutboxRow] | None = writer.info.get(_WRITTEN)
    if written is not None:
        written.extend(rows)


class UnitOfWork:
    """One API request or worker step: its transactions, and the outbox rows they committed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], producer: Producer) -> None:
        self.sessions = sessions
        self.producer = producer
        self.committed: list[OutboxRow] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits on success; its rows count only once it has."""
        written: list[OutboxRow] = []
        async with self.sessions.begin() as session:
            session.info[_WRITTEN] = written
            yield session
        self.committed += written

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[db.Driver]:
        """A ``db.driver`` connection: each statement commits alone, so the rows one
        writes count as soon as it returns."""
        async with db.driver(self.sessions) as driver:
            driver.info[_WRITTEN] = self.committed
            yield driver

    async def publish(self) -> bool:
        """Publish the committed rows not yet published; False if the broker failed."""
        rows, self.committed = self.committed, []
        return await publish_rows(self.sessions, self.producer, rows)


@asynccontextmanager
async def unit_of_work(
    sessions: async_sessionmaker[AsyncSession], producer: Producer
) -> AsyncIterator[UnitOfWork]:
    """Run a unit of work; once it is done, publish what its transactions committed.

    On an error nothing is published here: rows of transactions that committed
    before it wait for the relay.
    """
    work = UnitOfWork(sessions, producer)
    yield work
    await work.publish()


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
