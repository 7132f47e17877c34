"""Statements run on the asyncpg connection itself (``service.db.driver``), and DATABASE_URL."""

from __future__ import annotations

import asyncio
from typing import cast

import asyncpg
import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import db
from service.cli import migrate
from service.settings import Settings

_BACKEND = db.DriverStatement.of(text("SELECT pg_backend_pid() + CAST(:zero AS int)"))


async def test_named_parameters_are_passed_in_their_places(engine: AsyncEngine) -> None:
    statement = db.DriverStatement.of(
        text("SELECT CAST(:b AS int) - CAST(:a AS int), CAST(:a AS int) * 10")
    )
    async with db.driver(engine) as driver:
        (row,) = await driver.fetch(statement, {"a": 2, "b": 7})
    assert (row[0], row[1]) == (5, 20)


async def test_driver_statements_each_commit_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """No statement waits inside a transaction that nobody commits."""
    xid = db.DriverStatement.of(text("SELECT pg_current_xact_id()::text, CAST(:n AS int)"))
    async with db.driver(sessions) as driver:
        (first,) = await driver.fetch(xid, {"n": 1})
        (second,) = await driver.fetch(xid, {"n": 2})
    assert first[0] != second[0]


async def test_a_driver_statement_costs_one_round_trip(engine: AsyncEngine) -> None:
    """Autocommit is the driver's own flag: no BEGIN, COMMIT or reset statements."""
    sent: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        sent.append(record.query)

    async with db.driver(engine) as driver:
        raw = cast(asyncpg.Connection, driver.raw)
        raw.add_query_logger(log)
        await driver.fetch(_BACKEND, {"zero": 0})
    raw.remove_query_logger(log)  # after the connection went back to the pool
    assert sent == [_BACKEND.sql]


async def test_a_connection_found_closed_is_not_handed_out_again(
    migrated: Settings, engine: AsyncEngine
) -> None:
    """A backend gone (a restart, a terminated session) costs one failed statement only."""
    own = db.create_engine(migrated.model_copy(update={"database_pool_size": 1}))
    try:
        async with db.driver(own) as driver:
            (row,) = await driver.fetch(_BACKEND, {"zero": 0})
        async with engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": row[0]})
        async with db.driver(own) as driver:
            for _ in range(100):  # asyncpg notices the closed socket when it reads it
                if driver.raw.is_closed():
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(asyncpg.InterfaceError):
                await driver.fetch(_BACKEND, {"zero": 0})
        async with db.driver(own) as driver:
            (again,) = await driver.fetch(_BACKEND, {"zero": 0})
        assert again[0] != row[0]
    finally:
        await own.dispose()


# ---------------------------------------------------------------- DATABASE_URL forms


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+asyncpg"])
def test_database_url_in_libpq_or_sqlalchemy_form_means_asyncpg(scheme: str) -> None:
    settings = Settings(database_url=f"{scheme}://app:s%40fe@db.example:5433/campaigns")
    assert settings.database_url == "postgresql+asyncpg://app:s%40fe@db.example:5433/campaigns"


def test_libpq_sslmode_becomes_asyncpg_ssl() -> None:
    settings = Settings(database_url="postgresql://app@db.example/campaigns?sslmode=require")
    assert settings.database_url == "postgresql+asyncpg://app@db.example/campaigns?ssl=require"


@pytest.mark.parametrize("url", ["mysql://app@db.example/campaigns", "not a url"])
def test_a_database_url_that_is_not_postgresql_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL") as refused:
        Settings(database_url=url)
    assert url not in str(refused.value)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_the_engine_and_migrations_work_with_a_libpq_url(
    migrated: Settings, scheme: str
) -> None:
    libpq_url = migrated.database_url.replace("postgresql+asyncpg", scheme, 1)
    settings = Settings(database_url=libpq_url)
    await asyncio.to_thread(migrate, settings)  # already at head: alembic connects and checks
    engine = db.create_engine(settings)
    try:
        async with engine.connect() as connection:
            version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        await engine.dispose()
    assert version
