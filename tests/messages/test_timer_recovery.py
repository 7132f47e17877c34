"""The timers role killed with SIGKILL mid-firing, on a stack of its own, as real processes.

Thousands of reminders fall due at once; the first ``timers`` process is killed
while it fires them, a second one takes over. The promise: every reminder's
email is queued exactly once (a message row per appointment), none is lost and
no timer is left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.devstack import DevStack
from service.cli import migrate
from service.db import create_engine
from service.kafka import create_topics
from service.settings import settings_from_env

REMINDERS = 4000


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("timer-recovery")
    stack = DevStack(root / "stack", fast=True)
    stack.start()
    values = {
        **os.environ,
        **stack.env(),
        "KAFKA_TOPIC_PREFIX": f"timers-{uuid.uuid4().hex[:6]}-",
        "TRACKING_SECRET": "timer-recovery-tracking-secret-0123",
        "TIMERS_POLL_SECONDS": "0.2",
        "OUTBOX_DIR": str(root / "outbox"),
        "LOG_LEVEL": "INFO",
    }
    settings = settings_from_env(values)
    migrate(settings)
    create_topics(settings)
    yield values
    stack.stop()


@pytest.fixture
async def db(env: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings_from_env(env))
    yield engine
    await engine.dispose()


async def due_reminders(engine: AsyncEngine, sponsor: str, count: int) -> None:
    """``count`` booked appointments a day ahead, each with its 24 h reminder due now."""
    details = (
        '{"title": "Demo", "host": {"email": "rep@sponsor.example", "name": "Sam"}, '
        '"lead": {"email": "lead@customer.example", "name": null, "time_zone": null}}'
    )
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO sponsors (id, name, from_email) VALUES (:s, 'S', 's@x.example')"),
            {"s": sponsor},
        )
        await connection.execute(
            text(
                "INSERT INTO appointments (sponsor_id, appointment_id, sequence, state, "
                "start_at, end_at, time_zone, lead_email, details) SELECT :s, 'a' || n, 0, "
                "'booked', now() + interval '1 day', now() + interval '25 hours', 'UTC', "
                "'lead' || n || '@customer.example', CAST(:d AS jsonb) "
                "FROM generate_series(1, :n) n"
            ),
            {"s": sponsor, "d": details, "n": count},
        )
        await connection.execute(
            text(
                "INSERT INTO timers (kind, key, due_at, payload) SELECT "
                "'appointment.reminder', :prefix || n || :suffix, now(), "
                "jsonb_build_object('sponsor_id', CAST(:s AS text), 'appointment_id', 'a' || n, "
                "'sequence', 0, 'reminder', '24h', 'minutes', 1440) "
                "FROM generate_series(1, :n) n"
            ),
            {"s": sponsor, "n": count, "prefix": f"appointment:{sponsor}:a", "suffix": ":24h"},
        )


async def counts(engine: AsyncEngine, sponsor: str) -> tuple[int, int]:
    """(reminder messages queued, reminder timers left) of the sponsor."""
    async with engine.connect() as connection:
        sent = await connection.scalar(
            text("SELECT count(*) FROM messages WHERE sponsor_id = :s"), {"s": sponsor}
        )
        left = await connection.scalar(
            text("SELECT count(*) FROM timers WHERE key LIKE :p"), {"p": f"appointment:{sponsor}:%"}
        )
    return int(sent or 0), int(left or 0)


def start_timers(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "service.cli", "worker", "--role", "timers"]
    output = log.open("ab")
    return subprocess.Popen(args, env=env, stdout=output, stderr=output)


async def test_a_timers_process_killed_mid_firing_leaves_each_reminder_sent_exactly_once(
    env: dict[str, str], db: AsyncEngine, tmp_path: Path
) -> None:
    sponsor = f"tr-{uuid.uuid4().hex[:8]}"
    await due_reminders(db, sponsor, REMINDERS)
    doomed = start_timers(env, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 60
        while (await counts(db, sponsor))[0] < REMINDERS // 10:
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            await asyncio.sleep(0.02)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    sent, left = await counts(db, sponsor)
    assert left > 0, "the kill came after the last reminder: nothing was left to recover"
    assert sent + left == REMINDERS  # each claimed timer committed with its message, or neither

    second = start_timers(env, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 60
        while (await counts(db, sponsor))[1] > 0:
            assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()[-3000:]
            await asyncio.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.wait, 30)
    async with db.connect() as connection:
        per_appointment = (
            await connection.execute(
                text(
                    "SELECT tags->>'appointment_id', count(*) FROM messages "
                    "WHERE sponsor_id = :s GROUP BY 1"
                ),
                {"s": sponsor},
            )
        ).all()
    assert len(per_appointment) == REMINDERS
    assert {count for _, count in per_appointment} == {1}
