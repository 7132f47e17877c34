"""Retention: deliveries partitioned by id and raw events by day, created ahead by the
relay's leader, dropped (archived first when asked) once past retention; the migration
that partitions them keeps every row of a populated database."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.cli import migrate
from service.db import create_engine, session_factory
from service.retention.logic import maintain
from service.settings import Settings
from service.stats.repository import stream_deliveries
from service.tracking import repository as tracking
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]


def upgrade(settings: Settings, revision: str) -> None:
    config = Config(str(ROOT / "migrations" / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", settings.database_url)
    command.upgrade(config, revision)


def downgrade(settings: Settings, revision: str) -> None:
    config = Config(str(ROOT / "migrations" / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", settings.database_url)
    command.downgrade(config, revision)


@pytest.fixture
async def fresh(engine: AsyncEngine, migrated: Settings) -> Settings:
    """An empty database of its own (maintenance here drops partitions; no other test's)."""
    name = f"retention_{uuid.uuid4().hex[:12]}"
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(migrated.database_url).set(database=name)
    # Not dropped: the session's cluster goes with the session.
    return migrated.model_copy(update={"database_url": url.render_as_string(hide_password=False)})


@pytest.fixture
async def db(fresh: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await asyncio.to_thread(migrate, fresh)
    own = create_engine(fresh)
    yield session_factory(own)
    await own.dispose()


async def add_campaign(
    session: AsyncSession, statuses: list[str], sponsor_id: str = "sp-retention"
) -> uuid.UUID:
    """A campaign with one delivery per status, in that order (ids in that order)."""
    await session.execute(
        text(
            "INSERT INTO sponsors (id, name, from_email) VALUES (:s, 'S', 'news@s.example') "
            "ON CONFLICT DO NOTHING"
        ),
        {"s": sponsor_id},
    )
    campaign_id = uuid.uuid4()
    await session.execute(
        text("""
INSERT INTO campaigns (id, sponsor_id, name, subject, message_body, audience_type, status)
VALUES (:id, :s, 'C', 'Hello', 'Hi', 'all', 'sending')
"""),
        {"id": campaign_id, "s": sponsor_id},
    )
    await session.execute(
        text("""
INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no, status)
SELECT :c, n, 'r' || n || '@example.com', n / 100, s
FROM unnest(CAST(:statuses AS text[])) WITH ORDINALITY AS v(s, n) ORDER BY n
"""),
        {"c": campaign_id, "statuses": statuses},
    )
    return campaign_id


async def count(session: AsyncSession, sql: str, **params: Any) -> int:
    return int(await session.scalar(text(sql), params) or 0)


async def test_the_migration_keeps_every_row_of_a_populated_database(fresh: Settings) -> None:
    await asyncio.to_thread(upgrade, fresh, "0014")
    own = create_engine(fresh)
    sessions = session_factory(own)
    old = datetime.now(UTC) - timedelta(days=30)
    try:
        async with sessions.begin() as session:
            campaign_id = await add_campaign(session, ["sent"] * 250 + ["pending"] * 50)
            await session.execute(
                text("""
INSERT INTO delivery_events (event_id, delivery_id, campaign_id, type, occurred_at)
SELECT 'e' || d.id, d.id, d.campaign_id, 'delivered',
       CAST(:old AS timestamptz) + make_interval(secs => d.id)
FROM campaign_deliveries d
"""),
                {"old": old},
            )
            before = await count(session, "SELECT max(id) FROM campaign_deliveries")
        await asyncio.to_thread(migrate, fresh)
        async with sessions.begin() as session:
            assert await count(session, "SELECT count(*) FROM campaign_deliveries") == 300
            assert await count(session, "SELECT count(*) FROM delivery_events") == 300
            kind = await session.scalar(
                text("SELECT relkind::text FROM pg_class WHERE relname = 'campaign_deliveries'")
            )
            assert kind == "p"  # partitioned
            # Lookups by id, by campaign and the export read the old rows.
            refs = await tracking.deliveries(session, [before])
            assert [r.campaign_id for r in refs] == [campaign_id]
            pending = (
                "SELECT count(*) FROM campaign_deliveries "
                "WHERE campaign_id = :c AND status = 'pending'"
            )
            assert await count(session, pending, c=campaign_id) == 50
            # New rows follow the old ids, in a new partition.
            new_campaign = await add_campaign(session, ["pending"])
            row = (
                await session.execute(
                    text(
                        "SELECT id, tableoid::regclass::text FROM campaign_deliveries "
                        "WHERE campaign_id = :c"
                    ),
                    {"c": new_campaign},
                )
            ).one()
            assert row[0] == before + 1
            assert row[1] == f"campaign_deliveries_{before + 1}"
            # An old event replayed is still a duplicate.
            replay = {
                "event_id": f"e{before}",
                "delivery_id": before,
                "campaign_id": campaign_id,
                "type": "delivered",
                "occurred_at": old + timedelta(seconds=before),
                "link_position": None,
                "is_machine": False,
                "ip_hash": None,
                "payload": "{}",
            }
            assert await tracking.insert_events(session, [replay]) == set()
        exported = [row async for chunk in stream_deliveries(own, campaign_id) for row in chunk]
        assert len(exported) == 300
    finally:
        await own.dispose()


async def test_undoing_the_migration_keeps_every_row(fresh: Settings) -> None:
    await asyncio.to_thread(migrate, fresh)
    own = create_engine(fresh)
    sessions = session_factory(own)
    try:
        async with sessions.begin() as session:
            campaign_id = await add_campaign(session, ["sent"] * 20)
            await session.execute(
                text(
                    "INSERT INTO delivery_events (event_id, type, occurred_at) "
                    "VALUES ('e1', 'delivered', now())"
                )
            )
        await own.dispose()
        await asyncio.to_thread(downgrade, fresh, "0014")
        async with sessions.begin() as session:
            kind = "SELECT count(*) FROM pg_class WHERE relname = :t AND relkind = 'r'"
            assert await count(session, kind, t="campaign_deliveries") == 1
            where = "SELECT count(*) FROM campaign_deliveries WHERE campaign_id = :c"
            assert await count(session, where, c=campaign_id) == 20
            assert await count(session, "SELECT count(*) FROM delivery_events") == 1
            await add_campaign(session, ["pending"], sponsor_id="sp-after")  # ids still given
        await own.dispose()
        await asyncio.to_thread(migrate, fresh)
        async with sessions() as session:
            assert await count(session, "SELECT count(*) FROM campaign_deliveries") == 21
    finally:
        await own.dispose()


async def test_a_lookup_by_id_reads_one_partition(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        plan = await session.scalar(
            text("EXPLAIN (FORMAT JSON) SELECT * FROM campaign_deliveries WHERE id = 12345")
        )
    text_plan = json.dumps(plan)
    assert text_plan.count('"Relation Name"') == 1
    assert "campaign_deliveries_default" not in text_plan


async def test_a_lead_planned_twice_in_a_partition_is_kept_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:
        campaign_id = await add_campaign(session, ["pending"], sponsor_id="sp-retention-uq")
        again = await session.execute(
            text("""
INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no)
VALUES (:c, 1, 'r1@example.com', 0) ON CONFLICT DO NOTHING
"""),
            {"c": campaign_id},
        )
        assert again.rowcount == 0  # type: ignore[attr-defined]
        assert (
            await count(
                session,
                "SELECT count(*) FROM campaign_deliveries WHERE campaign_id = :c",
                c=campaign_id,
            )
            == 1
        )


async def test_partitions_past_retention_are_archived_and_dropped_unless_rows_are_pending(
    db: async_sessionmaker[AsyncSession], fresh: Settings, tmp_path: Path
) -> None:
    settings = fresh.model_copy(
        update={"delivery_partition_size": 100, "retention_archive_dir": str(tmp_path)}
    )
    t0 = datetime.now(UTC)
    async with db.begin() as session:
        # Past the migration's first, wide range, into ranges of 100 ids.
        await session.execute(text("SELECT setval('campaign_deliveries_id_seq', 10000001, false)"))
        first = await maintain(session, settings, t0)
    assert "campaign_deliveries_10000001" in first.created
    assert "campaign_deliveries_10000101" in first.created
    assert f"delivery_events_{(t0 + timedelta(days=2)):%Y%m%d}" in first.created
    async with db.begin() as session:
        done_campaign = await add_campaign(session, ["sent"] * 100)  # ids …001-…100
        paused = await add_campaign(session, ["pending"] + ["sent"] * 149)  # …101-…250
        for event_id, at in (("old", t0 - timedelta(days=100)), ("new", t0 + timedelta(days=1))):
            await session.execute(
                text("""
INSERT INTO delivery_events (event_id, type, occurred_at) VALUES (:e, 'delivered', :at)
"""),
                {"e": event_id, "at": at},
            )
        await maintain(session, settings, t0)  # closes the two full ranges
    async with db.begin() as session:
        later = await maintain(session, settings, t0 + timedelta(days=91))
    assert "campaign_deliveries_10000001" in later.dropped
    assert "campaign_deliveries_legacy" in later.dropped
    assert "delivery_events_legacy" in later.dropped
    assert later.kept_pending == ["campaign_deliveries_10000101"]
    async with db() as session:
        gone = "SELECT count(*) FROM campaign_deliveries WHERE campaign_id = :c"
        assert await count(session, gone, c=done_campaign) == 0
        assert await count(session, gone, c=paused) == 150
        events = await session.execute(text("SELECT event_id FROM delivery_events"))
        assert [row[0] for row in events] == ["new"]
    with (tmp_path / "campaign_deliveries_10000001.csv").open() as archived:
        rows = list(csv.DictReader(archived))
    assert len(rows) == 100
    assert {row["campaign_id"] for row in rows} == {str(done_campaign)}


async def test_the_upkeep_deletes_the_audience_change_log_past_a_day_and_keeps_the_rest(
    db: async_sessionmaker[AsyncSession], fresh: Settings
) -> None:
    t0 = datetime.now(UTC)
    async with db.begin() as session:
        await session.execute(text("DELETE FROM audience_changes"))
        for at in (t0 - timedelta(days=2), t0 - timedelta(hours=1)):
            await session.execute(
                text(
                    "INSERT INTO audience_changes (sponsor_id, lead_ids, at) "
                    "VALUES ('s', '{1}', :at)"
                ),
                {"at": at},
            )
        done = await maintain(session, fresh, t0)
    assert done.audience_changes_pruned == 1
    async with db() as session:
        assert await count(session, "SELECT count(*) FROM audience_changes") == 1


async def test_the_upkeep_deletes_replies_and_conversions_past_their_retention(
    db: async_sessionmaker[AsyncSession], fresh: Settings
) -> None:
    t0 = datetime.now(UTC)
    kept_days = fresh.digest_events_retention_days
    async with db.begin() as session:
        for n, at in enumerate((t0 - timedelta(days=kept_days + 1), t0 - timedelta(days=1))):
            await session.execute(
                text(
                    "INSERT INTO digest_events (topic, event_id, sponsor_id, kind, type, "
                    "recorded_at) VALUES ('orders.v1', :id, 's', 'conversion', 'order.paid', :at)"
                ),
                {"id": f"order-{n}", "at": at},
            )
        done = await maintain(session, fresh, t0)
    assert done.digest_events_pruned == 1
    async with db() as session:
        assert await count(session, "SELECT count(*) FROM digest_events") == 1


async def test_the_upkeep_deletes_old_finished_messages_firings_and_idempotency_keys(
    db: async_sessionmaker[AsyncSession], fresh: Settings
) -> None:
    t0 = datetime.now(UTC)
    old, recent = t0 - timedelta(days=fresh.retention_days + 1), t0 - timedelta(days=1)
    async with db.begin() as session:
        await session.execute(
            text(
                "INSERT INTO sponsors (id, name, from_email, postal_address) "
                "VALUES ('s', 'S', 's@s.example', '1 Road')"
            )
        )
        messages = {  # (created, status): id
            (at, status): uuid.uuid4()
            for at in (old, recent)
            for status in ("sent", "failed", "queued", "scheduled", "held")
        }
        for (at, status), message_id in messages.items():
            await session.execute(
                text(
                    "INSERT INTO messages (id, sponsor_id, to_email, status, created_at) "
                    "VALUES (:id, 's', 'a@b.example', :status, :at)"
                ),
                {"id": message_id, "status": status, "at": at},
            )
            await session.execute(
                text(
                    "INSERT INTO message_events (event_id, message_id, type_id, type, occurred_at) "
                    "VALUES (:e, :id, :id, 'opened', :at)"
                ),
                {"e": f"e-{message_id}", "id": message_id, "at": at},
            )
        rule = await session.scalar(
            text(
                "INSERT INTO trigger_rules (id, sponsor_id, name, topic, condition, actions) "
                "VALUES (gen_random_uuid(), 's', 'r', 'leads.v1', '{}', '[]') RETURNING id"
            )
        )
        for n, at in enumerate((old, recent)):
            await session.execute(
                text(
                    "INSERT INTO trigger_firings (rule_id, event_id, created_at) "
                    "VALUES (:r, :e, :at)"
                ),
                {"r": rule, "e": f"event-{n}", "at": at},
            )
        for key, at in (("day-old", t0 - timedelta(hours=25)), ("fresh", t0 - timedelta(hours=1))):
            await session.execute(
                text(
                    "INSERT INTO message_idempotency_keys (sponsor_id, key, body_hash, "
                    "message_ids, created_at) VALUES ('s', :k, '\\x00', '{}', :at)"
                ),
                {"k": key, "at": at},
            )
        done = await maintain(session, fresh, t0)

    assert (done.messages_pruned, done.firings_pruned, done.idempotency_keys_pruned) == (2, 1, 1)
    async with db() as session:
        left = set((await session.scalars(text("SELECT id FROM messages"))).all())
        waiting = ("queued", "scheduled", "held")  # still to send: kept, however old
        assert left == {
            i for (at, status), i in messages.items() if at == recent or status in waiting
        }
        events = "SELECT count(*) FROM message_events"
        assert await count(session, events) == len(left)  # the deleted messages' events went too
        assert await count(session, "SELECT count(*) FROM trigger_firings") == 1
        keys = (await session.scalars(text("SELECT key FROM message_idempotency_keys"))).all()
        assert keys == ["fresh"]


async def test_rows_past_the_last_partition_wait_in_the_default_and_move_into_their_range(
    db: async_sessionmaker[AsyncSession], fresh: Settings
) -> None:
    settings = fresh.model_copy(update={"delivery_partition_size": 100})
    async with db.begin() as session:
        await session.execute(text("SELECT setval('campaign_deliveries_id_seq', 10000001, false)"))
        await maintain(session, settings)
        # A campaign larger than the ranges made ahead.
        campaign_id = await add_campaign(session, ["pending"] * 450)
        where = "SELECT count(*) FROM campaign_deliveries_default WHERE campaign_id = :c"
        assert await count(session, where, c=campaign_id) == 250
    async with db.begin() as session:
        done = await maintain(session, settings)
        assert done.moved == 250
        assert await count(session, where, c=campaign_id) == 0
        total = "SELECT count(*) FROM campaign_deliveries WHERE campaign_id = :c"
        assert await count(session, total, c=campaign_id) == 450


@pytest.mark.usefixtures("workers")
async def test_the_relay_leader_creates_partitions_ahead(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    day = f"delivery_events_{(datetime.now(UTC) + timedelta(days=2)):%Y%m%d}"

    async def made() -> bool:
        async with sessions() as session:
            found = await session.scalar(
                text("SELECT count(*) FROM table_partitions WHERE name = :n"), {"n": day}
            )
        return bool(found == 1)

    assert await eventually(made)
