"""What appointments set for later beyond the default reminders: reminder offsets set per
sponsor on the ``appointment.reminder`` type, and the feedback request after completion.

Rules are called on the real database (``logic.handle``, and ``fire_due`` with the
handlers the timers role uses); offsets are set through the message types API.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCompleted,
    AppointmentEvent,
    AppointmentRescheduled,
)
from service.appointments import emails, followups, logic
from service.appointments.outgoing import Config
from service.settings import Settings
from service.timers import repository as timers
from service.timers.logic import fire_due
from tests.conftest import TokenFactory
from tests.messages.test_appointments import APRIL_NINE, BOOKED_AT, CONFIG, event

# Completed at the end of the meeting; the feedback request falls due two hours later.
ENDED = APRIL_NINE + timedelta(minutes=45)


def completed(sponsor: str, appointment_id: str) -> AppointmentEvent:
    values = event(AppointmentBooked, sponsor, appointment_id).model_dump()
    values.pop("type")
    return AppointmentCompleted(**values)


async def apply(
    sessions: async_sessionmaker[AsyncSession],
    item: AppointmentEvent,
    now: datetime = BOOKED_AT,
    config: Config = CONFIG,
) -> None:
    async with sessions.begin() as session:
        await logic.handle(session, item, config, now=now)


async def set_timers(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, appointment_id: str
) -> dict[str, datetime]:
    """Each timer set for the appointment, by the last part of its key."""
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT key, due_at FROM timers WHERE key LIKE :prefix"),
            {"prefix": f"appointment:{sponsor}:{appointment_id}:%"},
        )
    return {row.key.rsplit(":", 1)[1]: row.due_at for row in rows}


async def sent(sessions: async_sessionmaker[AsyncSession], sponsor: str) -> list[str]:
    async with sessions() as session:
        keys = await session.scalars(
            text("SELECT type_key FROM messages WHERE sponsor_id = :s ORDER BY created_at"),
            {"s": sponsor},
        )
    return list(keys)


async def fire_everything_due(
    sessions: async_sessionmaker[AsyncSession], now: datetime, config: Config = CONFIG
) -> int:
    async with sessions.begin() as session:
        return await fire_due(session, followups.timer_handlers(config), limit=1000, now=now)


# Feedback --------------------------------------------------------------------------


def test_the_feedback_request_waits_two_hours_unless_set_otherwise() -> None:
    assert Settings().appointment_feedback_delay_seconds == 2 * 3600
    assert (
        Settings(appointment_feedback_delay_seconds=600).appointment_feedback_delay_seconds == 600
    )


async def test_completing_an_appointment_sets_its_feedback_request_after_the_set_delay(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    quick = Config(CONFIG.links, feedback_delay=timedelta(minutes=10))
    await apply(sessions, event(AppointmentBooked, sponsor, "fb-1"))
    await apply(sessions, completed(sponsor, "fb-1"), now=ENDED, config=quick)
    assert await set_timers(sessions, sponsor, "fb-1") == {
        "feedback": ENDED + timedelta(minutes=10)
    }


async def test_a_due_feedback_request_is_sent_once_to_the_lead(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    await apply(sessions, event(AppointmentBooked, sponsor, "fb-2"))
    await apply(sessions, completed(sponsor, "fb-2"), now=ENDED)
    await apply(sessions, completed(sponsor, "fb-2"), now=ENDED)  # a second copy
    later = ENDED + timedelta(hours=3)

    await fire_everything_due(sessions, later)
    await fire_everything_due(sessions, later)
    await apply(sessions, completed(sponsor, "fb-2"), now=ENDED)  # a replay after it fired
    await fire_everything_due(sessions, later)

    assert await sent(sessions, sponsor) == [emails.CONFIRMATION, emails.FEEDBACK]
    async with sessions() as session:
        data = await session.scalar(
            text("SELECT data FROM messages WHERE sponsor_id = :s AND type_key = :k"),
            {"s": sponsor, "k": emails.FEEDBACK},
        )
    assert data["title"] == "Product demo"
    assert "cancel_url" not in data and "reschedule_url" not in data


async def test_a_cancelled_appointment_gets_no_feedback_request(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    await apply(sessions, event(AppointmentBooked, sponsor, "fb-3"))
    await apply(sessions, event(AppointmentCancelled, sponsor, "fb-3"))
    await apply(sessions, completed(sponsor, "fb-3"), now=ENDED)
    assert await set_timers(sessions, sponsor, "fb-3") == {}
    # A feedback timer left from before the cancellation fires to no effect.
    async with sessions.begin() as session:
        payload = {"sponsor_id": sponsor, "appointment_id": "fb-3"}
        await timers.schedule(session, followups.FEEDBACK_KIND, f"stray:{sponsor}", ENDED, payload)
    await fire_everything_due(sessions, ENDED + timedelta(hours=3))
    assert emails.FEEDBACK not in await sent(sessions, sponsor)


# Reminder offsets -------------------------------------------------------------------


def reminder_type(**overrides: Any) -> dict[str, Any]:
    return {**emails.type_values(emails.REMINDER), **overrides}


async def set_offsets(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, offsets: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/sponsors/{sponsor}/message-types",
        headers=token(sponsor),
        json=reminder_type(reminder_offsets=offsets),
    )


async def test_reminders_follow_the_offsets_set_on_the_reminder_type(
    sessions: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
) -> None:
    created = await set_offsets(client, sponsor, token, [2880, 30])
    assert created.status_code == 201, created.text
    assert created.json()["reminder_offsets"] == [2880, 30]

    await apply(sessions, event(AppointmentBooked, sponsor, "off-1"))
    assert await set_timers(sessions, sponsor, "off-1") == {
        "48h": APRIL_NINE - timedelta(days=2),
        "30m": APRIL_NINE - timedelta(minutes=30),
    }
    moved = APRIL_NINE + timedelta(days=1)
    await apply(sessions, event(AppointmentRescheduled, sponsor, "off-1", start=moved))
    assert await set_timers(sessions, sponsor, "off-1") == {
        "48h": moved - timedelta(days=2),
        "30m": moved - timedelta(minutes=30),
    }
    # Forty minutes before the start: the 30-minute reminder is still ahead, the
    # 48-hour one would be past and is not set.
    soon = datetime.now(UTC) + timedelta(minutes=40)
    await apply(
        sessions,
        event(AppointmentRescheduled, sponsor, "off-1", start=soon),
        now=datetime.now(UTC),
    )
    assert await set_timers(sessions, sponsor, "off-1") == {"30m": soon - timedelta(minutes=30)}
    await apply(sessions, event(AppointmentCancelled, sponsor, "off-1"))
    assert await set_timers(sessions, sponsor, "off-1") == {}


async def test_a_reminder_at_a_set_offset_says_how_soon(
    sessions: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
) -> None:
    assert (await set_offsets(client, sponsor, token, [90])).status_code == 201
    now = datetime.now(UTC)
    start = now + timedelta(hours=3)
    await apply(sessions, event(AppointmentBooked, sponsor, "off-2", start=start), now=now)
    assert await fire_everything_due(sessions, start - timedelta(minutes=89)) >= 1
    async with sessions() as session:
        words = await session.scalar(
            text("SELECT data->>'reminder' FROM messages WHERE sponsor_id = :s AND type_key = :k"),
            {"s": sponsor, "k": emails.REMINDER},
        )
    assert words == "in 90 minutes"


@pytest.mark.parametrize(
    "offsets",
    [[], [0], [4], [30 * 24 * 60 + 1], [60, 60], [10, 20, 30, 40, 50, 60], ["soon"]],
)
async def test_reminder_offsets_out_of_range_repeated_or_too_many_are_refused(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, offsets: Any
) -> None:
    response = await set_offsets(client, sponsor, token, offsets)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith("reminder_offsets")


async def test_reminder_offsets_on_another_type_are_refused(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/message-types",
        headers=token(sponsor),
        json=reminder_type(key="appointment.nudge", reminder_offsets=[60]),
    )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_reminder_offsets",
        "message": "reminder offsets are for the appointment.reminder type only",
        "field": "reminder_offsets",
    }


# Firing in batches ------------------------------------------------------------------


async def _statements_to_fire(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, count: int, now: datetime
) -> int:
    """How many SQL statements one pass takes to fire ``count`` due reminders."""
    for n in range(count):
        await apply(sessions, event(AppointmentBooked, sponsor, f"batch-{count}-{n}"), now=now)
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE timers SET due_at = :due WHERE key LIKE :prefix"),
            {"due": now, "prefix": f"appointment:{sponsor}:batch-{count}-%:24h"},
        )
    seen: list[str] = []

    def count_statement(*args: Any) -> None:
        seen.append(args[2])

    engine = sessions.kw["bind"].sync_engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", count_statement)
    try:
        fired = await fire_everything_due(sessions, now + timedelta(microseconds=1))
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", count_statement)
    assert fired >= count
    return len(seen)


async def test_firing_a_batch_of_reminders_takes_as_many_statements_for_fifty_as_for_two(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    # Due before any other test's timer, so each pass fires only these.
    now = datetime(2026, 1, 1, tzinfo=UTC)
    few = await _statements_to_fire(sessions, sponsor, 2, now)
    many = await _statements_to_fire(sessions, sponsor, 50, now)
    assert many == few
    assert Counter(await sent(sessions, sponsor)) == {emails.CONFIRMATION: 52, emails.REMINDER: 52}


async def test_claiming_due_timers_can_use_the_due_at_index(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = await timers.explain_claim(session, [followups.REMINDER_KIND], datetime.now(UTC))
    assert "ix_timers_due_at" in plan
