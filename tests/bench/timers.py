"""Timers at scale: many pending reminders, a steady stream falling due, a kill -9 halfway.

Loads ``BENCH_TIMERS`` booked appointments (default 100,000; the figure to aim at
is 1,000,000), each with a reminder timer. ``BENCH_TIMERS_RATE`` of them (1,000)
fall due each second for ``BENCH_TIMERS_SECONDS`` (30); the rest are due later in
the day and stay pending, so the claim works against the whole table. The
``timers`` role runs as a real process, with the default poll; halfway it is
killed with SIGKILL and a new one started. Figures: how late each reminder's
email was queued after its due time (p50/p99/max; each should be within 5 s at
p99, restart included), the firing process's RSS (sampled; should stay flat),
that every due reminder was queued exactly once, and whether the claim's plan
walks the ``due_at`` index at this table size.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.devstack import DevStack
from service.cli import migrate
from service.db import create_engine, session_factory
from service.kafka import create_topics
from service.settings import settings_from_env
from service.timers import repository as timers

TOTAL = int(os.environ.get("BENCH_TIMERS", "100000"))
RATE = int(os.environ.get("BENCH_TIMERS_RATE", "1000"))
SECONDS = int(os.environ.get("BENCH_TIMERS_SECONDS", "30"))
SPONSOR = "bench"
# Time for the first process to start before the first reminder falls due.
LEAD_SECONDS = 5.0


_TIMERS = (
    "INSERT INTO timers (kind, key, due_at, payload) SELECT 'appointment.reminder', "
    ":prefix || n || :suffix, {due_at}, jsonb_build_object('sponsor_id', CAST(:s AS text), "
    "'appointment_id', 'a' || n, 'sequence', 0, 'reminder', '24h', 'minutes', 1440) "
    "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) n"
)


async def _load(engine: AsyncEngine, due: int) -> None:
    """``TOTAL`` appointments; the reminders after the first ``due`` pending, due later
    in the day (the first ``due`` are set by ``_set_due``, once loading is done)."""
    details = (
        '{"title": "Demo", "host": {"email": "rep@sponsor.example", "name": "Sam"}, '
        '"lead": {"email": "lead@customer.example", "name": null, "time_zone": null}}'
    )
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO sponsors (id, name, from_email) VALUES (:s, 'B', 'b@x.example')"),
            {"s": SPONSOR},
        )
        await connection.execute(
            text(
                "INSERT INTO appointments (sponsor_id, appointment_id, sequence, state, "
                "start_at, end_at, time_zone, lead_email, details) SELECT :s, 'a' || n, 0, "
                "'booked', now() + interval '2 days', now() + interval '49 hours', 'UTC', "
                "'lead' || n || '@customer.example', CAST(:d AS jsonb) "
                "FROM generate_series(1, :n) n"
            ),
            {"s": SPONSOR, "d": details, "n": TOTAL},
        )
        later = "now() + interval '1 hour' + n * interval '10 ms'"
        await connection.execute(
            text(_TIMERS.format(due_at=later)), _params(first=due + 1, last=TOTAL)
        )
        await connection.execute(text("ANALYZE timers"))


async def _set_due(engine: AsyncEngine, due: int, start_at: float) -> None:
    """The first ``due`` reminders, ``RATE`` a second from ``start_at`` (unix seconds)."""
    stream = "to_timestamp(CAST(:start AS float8) + (n - 1) / CAST(:rate AS float8))"
    async with engine.begin() as connection:
        await connection.execute(
            text(_TIMERS.format(due_at=stream)),
            _params(first=1, last=due, start=start_at, rate=RATE),
        )


def _params(**values: Any) -> dict[str, Any]:
    return {"s": SPONSOR, "prefix": f"appointment:{SPONSOR}:a", "suffix": ":24h", **values}


async def _claim_plan(engine: AsyncEngine) -> str:
    async with session_factory(engine).begin() as session:
        return await timers.explain_claim(session, ["appointment.reminder"], datetime.now(UTC))


async def _queued(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM messages WHERE sponsor_id = :s"), {"s": SPONSOR}
        )
    return int(found or 0)


async def _lateness(engine: AsyncEngine, start_at: float) -> dict[str, Any]:
    """Each due reminder's lateness, from its message's commit-side time, and duplicates."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "WITH late AS (SELECT tags->>'appointment_id' AS a, extract(epoch FROM "
                    "created_at) - (:start + (CAST(substr(tags->>'appointment_id', 2) AS int) "
                    "- 1) / CAST(:rate AS float8)) AS s FROM messages WHERE sponsor_id = :sp) "
                    "SELECT count(*), count(DISTINCT a), "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY s), "
                    "percentile_cont(0.99) WITHIN GROUP (ORDER BY s), max(s) FROM late"
                ),
                {"start": start_at, "rate": RATE, "sp": SPONSOR},
            )
        ).one()
    return {
        "messages": int(row[0]),
        "appointments": int(row[1]),
        "p50": float(row[2] or 0),
        "p99": float(row[3] or 0),
        "max": float(row[4] or 0),
    }


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    output = log.open("ab")
    args = [sys.executable, "-m", "service.cli", "worker", "--role", "timers"]
    return subprocess.Popen(args, env=env, stdout=output, stderr=output)


def _sample(process: subprocess.Popen[bytes], until: float, samples: list[int]) -> None:
    """RSS of ``process`` every half second until ``until`` (monotonic)."""
    handle = psutil.Process(process.pid)
    while time.monotonic() < until and process.poll() is None:
        samples.append(handle.memory_info().rss)
        time.sleep(0.5)


def _growth_mb(samples: list[int]) -> float:
    """RSS growth from a quarter of the way in (after start-up) to the end."""
    if len(samples) < 4:
        return 0.0
    return round((samples[-1] - samples[len(samples) // 4]) / 2**20, 1)


async def _run(env: dict[str, str], workdir: Path) -> dict[str, Any]:
    settings = settings_from_env(env)
    engine = create_engine(settings)
    due = RATE * SECONDS
    try:
        load_started = time.monotonic()
        await _load(engine, due)
        load_seconds = time.monotonic() - load_started
        plan = await _claim_plan(engine)
        start_at = time.time() + LEAD_SECONDS
        await _set_due(engine, due, start_at)
        first = _start(env, workdir / "timers-1.log")
        halfway = time.monotonic() + LEAD_SECONDS + SECONDS / 2
        before: list[int] = []
        await asyncio.to_thread(_sample, first, halfway, before)
        first.send_signal(signal.SIGKILL)
        first.wait()
        queued_at_kill = await _queued(engine)
        second = _start(env, workdir / "timers-2.log")
        after: list[int] = []
        end = time.monotonic() + SECONDS / 2 + 5
        await asyncio.to_thread(_sample, second, end, after)
        for _ in range(240):  # a behind process gets two more minutes to catch up
            if await _queued(engine) >= due:
                break
            await asyncio.sleep(0.5)
        second.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.wait, 30)
        late = await _lateness(engine, start_at)
        return {
            "pending_timers": TOTAL,
            "due_per_second": RATE,
            "due_in_run": due,
            "load_seconds": round(load_seconds, 1),
            "claim_uses_due_at_index": "ix_timers_due_at" in plan,
            "queued_at_kill": queued_at_kill,
            "reminders_queued": late["messages"],
            "each_queued_exactly_once": late["messages"] == late["appointments"] == due,
            "lateness_p50_s": round(late["p50"], 2),
            "lateness_p99_s": round(late["p99"], 2),
            "lateness_max_s": round(late["max"], 2),
            "rss_first_process_mb": round(max(before, default=0) / 2**20, 1),
            "rss_first_process_growth_mb": _growth_mb(before),
            "rss_second_process_mb": round(max(after, default=0) / 2**20, 1),
            "rss_second_process_growth_mb": _growth_mb(after),
        }
    finally:
        await engine.dispose()


def main() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-timers-"))
    stack = DevStack(workdir / "stack", fast=True)
    stack.start()
    try:
        env = {
            **os.environ,
            **stack.env(),
            "KAFKA_TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:6]}-",
            "TRACKING_SECRET": "bench-tracking-secret-0123456789",
            "OUTBOX_DIR": str(workdir / "outbox"),
            "LOG_LEVEL": "WARNING",
        }
        settings = settings_from_env(env)
        migrate(settings)
        create_topics(settings)
        return asyncio.run(_run(env, workdir))
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
