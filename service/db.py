"""The database engine and session factory.

The unit of work (a request's or a worker step's transactions, and the outbox
rows they publish once committed) is ``service.outbox.unit_of_work``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from sqlalchemy import TextClause, event, exc
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import Pool

from schemas.types import CUT
from service.settings import Settings

# A connection back in the pool for less than this is used without a ping.
PING_AFTER_IDLE_SECONDS = 2.0


def create_engine(settings: Settings, *, name: str = "campaign-service") -> AsyncEngine:
    """An asyncpg engine, named ``name`` in ``pg_stat_activity``, whose pool survives
    a database restart.

    SQLAlchemy's ``pool_pre_ping`` costs three round trips (begin, ping,
    rollback) on every checkout: a third of a sender's statements per batch, and
    of a stats request. Here only a connection idle for ``PING_AFTER_IDLE_SECONDS``
    is pinged; one in steady use that finds the database gone fails its statement,
    SQLAlchemy then discards every pooled connection, and the caller's retry
    reconnects (the API answers that one request 503, see ``service.http``).
    JIT compilation is off: it costs more than it saves on these short statements,
    and added up to 100 ms to audience counts.
    """
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        connect_args={"server_settings": {"application_name": name, "jit": "off"}},
        json_deserializer=load_stored_json,
    )
    _ping_when_idle(engine.sync_engine.pool, PING_AFTER_IDLE_SECONDS)
    return engine


def load_stored_json(text: str) -> Any:
    """A json/jsonb column's value; one nested past what Python's parser can follow
    (written straight into the database) reads as a marker instead of failing every
    query that returns its row."""
    try:
        return json.loads(text)
    except RecursionError:
        return {"unreadable": CUT}


def as_columns(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> dict[str, list[Any]]:
    """Rows bound as one array per column (bind name → row key), for a statement that
    writes a whole batch from ``unnest`` of them in one round trip."""
    return {bind: [row[key] for row in rows] for bind, key in names.items()}


def _ping_when_idle(pool: Pool, idle_seconds: float) -> None:
    @event.listens_for(pool, "checkin")
    def checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool drops this connection and checks out another (a new one).
            raise exc.DisconnectionError(str(error)) from error


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class DriverRecord(Protocol):
    """A row as asyncpg returns it: by position or by column name."""

    def __getitem__(self, key: int | str, /) -> Any: ...


class DriverConnection(Protocol):
    """The methods of asyncpg's ``Connection`` that hot paths use."""

    async def fetch(self, query: str, *args: object) -> list[DriverRecord]: ...

    def is_closed(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A ``text()`` statement compiled once for asyncpg (``$1``-style, names in order)."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: TextClause) -> DriverStatement:
        compiled = statement.compile(dialect=PGDialect_asyncpg())  # type: ignore[no-untyped-call]
        return cls(str(compiled), tuple(compiled.positiontup or ()))


@dataclass(frozen=True, slots=True)
class Driver:
    """A pooled connection in autocommit mode, seen as its asyncpg connection."""

    connection: AsyncConnection
    raw: DriverConnection
    # What the work this connection serves keeps with it, as ``Session.info``
    # (the outbox's unit of work keeps the rows its statements wrote here).
    info: dict[str, Any] = field(default_factory=dict)

    async def fetch(
        self, statement: DriverStatement, params: Mapping[str, object]
    ) -> list[DriverRecord]:
        """Run ``statement``, SQLAlchemy bypassed; it commits alone.

        A connection found closed is invalidated, as SQLAlchemy would, so the
        pool does not hand it out again.
        """
        try:
            return await self.raw.fetch(statement.sql, *(params[name] for name in statement.names))
        except Exception as error:
            if self.raw.is_closed():
                await self.connection.invalidate(error)
            raise


@asynccontextmanager
async def driver(
    source: AsyncEngine | async_sessionmaker[AsyncSession],
) -> AsyncIterator[Driver]:
    """Check out a pooled connection in autocommit mode for ``DriverStatement``s.

    For statements run per batch of recipients: SQLAlchemy's work per statement
    (parameters, result rows) was most of the sender's database client CPU, and
    asyncpg keeps each statement prepared per connection. Autocommit is said
    outright rather than left to how a session would have handled the
    connection: each statement commits alone, none waits on a transaction
    nobody commits, and nothing else runs on the connection meanwhile. Setting
    the mode is the driver's own flag, not a statement: no extra round trip.
    """
    engine = source if isinstance(source, AsyncEngine) else source.kw["bind"]
    async with engine.connect() as pooled:
        connection = await pooled.execution_options(isolation_level="AUTOCOMMIT")
        raw = (await connection.get_raw_connection()).driver_connection
        yield Driver(connection, cast(DriverConnection, raw))
