"""Lead sync from ``leads.v1``: idempotent, newest state wins, deletions stick."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.leads import TOPIC_LEADS, LeadDeleted, LeadUpserted, lead_events
from service.kafka import Producer
from service.models import Lead
from service.settings import Settings
from tests.conftest import eventually
from tests.dead_letters import dead_letter, produce
from worker.lead_sync import LeadSync

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def upserted(sponsor: str, email: str, minute: int, **fields: Any) -> LeadUpserted:
    return LeadUpserted(
        id=uuid.uuid4().hex, sponsor_id=sponsor, email=email, updated_at=_at(minute), **fields
    )


def deleted(sponsor: str, email: str, minute: int) -> LeadDeleted:
    return LeadDeleted(id=uuid.uuid4().hex, sponsor_id=sponsor, email=email, updated_at=_at(minute))


async def _lead(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, email: str
) -> Lead | None:
    async with sessions() as session:
        return await session.scalar(
            select(Lead).where(Lead.sponsor_id == sponsor, Lead.email == email)
        )


async def test_an_older_upsert_never_overwrites_a_newer_one(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    sync = LeadSync(sessions)
    email = "ada@example.com"
    changed = await sync.apply(
        [
            upserted(sponsor, email, 1, name="one"),
            upserted(sponsor, email, 3, name="three", intent_level="hot", tags=["vip"]),
            upserted(sponsor, email, 2, name="two"),
        ]
    )
    assert changed == 2
    lead = await _lead(sessions, sponsor, email)
    assert lead is not None
    assert (lead.name, lead.intent_level, lead.tags) == ("three", "hot", ["vip"])
    assert lead.source_updated_at == _at(3)


async def test_a_duplicated_event_changes_nothing_the_second_time(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    sync = LeadSync(sessions)
    event = upserted(sponsor, "Bob@Example.com", 5, name="Bob", attributes={"booth": "B2"})
    assert await sync.apply([event]) == 1
    assert await sync.apply([event, event]) == 0
    lead = await _lead(sessions, sponsor, "bob@example.com")
    assert lead is not None and lead.attributes == {"booth": "B2"}


async def test_a_deletion_sticks_against_older_upserts_but_not_newer_ones(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    sync = LeadSync(sessions)
    email = "carol@example.com"
    await sync.apply([upserted(sponsor, email, 1, name="Carol")])
    # An older deletion does not remove a newer lead.
    assert await sync.apply([deleted(sponsor, email, 0)]) == 0
    assert await _lead(sessions, sponsor, email) is not None
    assert await sync.apply([deleted(sponsor, email, 10)]) == 1
    assert await _lead(sessions, sponsor, email) is None
    # Delivered late: an upsert older than the deletion does not bring it back …
    assert await sync.apply([upserted(sponsor, email, 9, name="zombie")]) == 0
    assert await _lead(sessions, sponsor, email) is None
    # … a newer one does.
    assert await sync.apply([upserted(sponsor, email, 11, name="Carol again")]) == 1
    lead = await _lead(sessions, sponsor, email)
    assert lead is not None and lead.name == "Carol again"


async def test_events_for_unknown_sponsors_or_bad_addresses_are_skipped(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    sync = LeadSync(sessions)
    changed = await sync.apply(
        [
            upserted("no-such-sponsor", "x@example.com", 1),
            upserted(sponsor, "not an address", 1),
            upserted(sponsor, "nul@example.com", 1, name="a\x00b"),
        ]
    )
    assert changed == 0


async def test_the_worker_applies_shuffled_and_duplicated_events_from_the_broker(
    migrated: Settings,
    workers: None,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    client: httpx.AsyncClient,
    token: Any,
) -> None:
    rng = random.Random(42)
    events: list[LeadUpserted | LeadDeleted] = []
    final: dict[str, str | None] = {}
    for i in range(20):
        email = f"sync{i}@example.com"
        history: list[LeadUpserted | LeadDeleted] = [
            upserted(sponsor, email, minute, name=f"v{minute}") for minute in range(1, 5)
        ]
        if i % 4 == 0:
            history.append(deleted(sponsor, email, 5))
            final[email] = None
        else:
            final[email] = "v4"
        events += history + rng.sample(history, 2)  # every lead gets two duplicates
    rng.shuffle(events)
    marker = upserted(sponsor, "marker@example.com", 1)
    producer = Producer(migrated)
    try:
        # One key: one partition, so the marker is applied after everything before it.
        await producer.send(
            [
                (TOPIC_LEADS, sponsor, event.model_dump_json().encode())
                for event in [*events, marker]
            ]
        )
    finally:
        producer.close()

    async def marker_seen() -> bool:
        return await _lead(sessions, sponsor, "marker@example.com") is not None

    await eventually(marker_seen)
    for email, name in final.items():
        lead = await _lead(sessions, sponsor, email)
        assert (lead.name if lead else None) == name, email
    # A message that is not a lead event is dropped, not retried forever.
    producer = Producer(migrated)
    try:
        await producer.send(
            [
                (TOPIC_LEADS, sponsor, b"not json"),
                (
                    TOPIC_LEADS,
                    sponsor,
                    upserted(sponsor, "after@example.com", 1).model_dump_json().encode(),
                ),
            ]
        )
    finally:
        producer.close()

    async def after_seen() -> bool:
        return await _lead(sessions, sponsor, "after@example.com") is not None

    await eventually(after_seen)


def test_event_contracts_export_as_json_schema(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "export-schemas", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    schema = json.loads((tmp_path / "leads.v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    event = upserted("sp", "a@example.com", 1, tags=["x"])
    jsonschema.validate(json.loads(event.model_dump_json()), schema)
    with_bad_type = {**json.loads(event.model_dump_json()), "type": "lead.renamed"}
    assert not jsonschema.Draft202012Validator(schema).is_valid(with_bad_type)
    assert lead_events.validate_json(event.model_dump_json()) == event
    written = {p.name for p in tmp_path.iterdir()}
    assert written >= {
        "leads.v1.json",
        "campaigns.v1.json",
        "tracking-events.v1.json",
        "provider-events.v1.json",
        "delivery-events.v1.json",
        "orders.v1.json",
        "conversations.v1.json",
    }
    for name in written:
        jsonschema.Draft202012Validator.check_schema(json.loads((tmp_path / name).read_text()))


@pytest.mark.usefixtures("workers")
async def test_a_lead_postgresql_cannot_store_is_dead_lettered_alone_and_its_batch_applied(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, migrated: Settings
) -> None:
    now = datetime.now(UTC)

    def lead(email: str, updated_at: str | None = None) -> bytes:
        event = LeadUpserted(id=uuid.uuid4().hex, sponsor_id=sponsor, email=email, updated_at=now)
        body = event.model_dump(mode="json")
        if updated_at is not None:
            body["updated_at"] = updated_at
        return orjson.dumps(body)

    # A valid time with its offset, which falls before year 1 in UTC: it decodes, but
    # neither Python nor PostgreSQL can hold it as a UTC time.
    poison = lead("poison@example.com", "0001-01-01T00:00:00+14:00")
    good = [lead("first@example.com"), lead("second@example.com")]
    await produce(migrated, TOPIC_LEADS, sponsor, good[0], poison, good[1])

    async def synced() -> bool:
        async with sessions() as session:
            found = await session.scalar(
                select(func.count()).select_from(Lead).where(Lead.sponsor_id == sponsor)
            )
        return bool(found == 2)

    assert await eventually(synced)
    value, headers = await dead_letter(migrated, sponsor)
    assert value == poison
    assert headers["dead-letter.reason"] == "invalid_value"
    assert headers["dead-letter.group"] == "lead-sync"
