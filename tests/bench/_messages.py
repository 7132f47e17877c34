"""What the message benchmarks share: a stack, the fake Resend, a sponsor with the starter set."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from devtools.devstack import DevStack, free_port, stop_processes, wait_for_port
from schemas.triggers import StarterIn
from service.cli import migrate
from service.db import create_engine, session_factory
from service.kafka import create_topics
from service.settings import Settings, settings_from_env
from service.triggers import starter

SPONSOR = "bench"
TEAM = "team@bench-sponsor.example"


@dataclass
class Bench:
    stack: DevStack
    env: dict[str, str]
    fake_url: str
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return settings_from_env(self.env)

    def worker(self, role: str, **overrides: str) -> subprocess.Popen[bytes]:
        ctl = [sys.executable, "-m", "service.cli", "worker", "--role", role]
        process = subprocess.Popen(ctl, env={**self.env, **overrides})
        self.children.append(process)
        return process

    def api(self, port: int) -> None:
        ctl = [sys.executable, "-m", "service.cli", "api", "--port", str(port), "--workers", "2"]
        self.children.append(subprocess.Popen(ctl, env=self.env))
        wait_for_port(port)


@contextlib.contextmanager
def bench_stack(name: str, rate_per_second: float) -> Iterator[Bench]:
    """A migrated stack, a fake Resend process (no validation), and the settings for both."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    stack = DevStack(workdir, fast=True)
    stack.start()
    fake_port = free_port()
    module = "tests.fakes.resend_server"
    fake = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(fake_port), "--no-validate"]
    )
    bench = Bench(stack, {}, f"http://127.0.0.1:{fake_port}", [fake])
    try:
        wait_for_port(fake_port)
        bench.env = {
            **os.environ,
            **stack.env(),
            "EMAIL_PROVIDER": "resend",
            "RESEND_API_KEY": "re_bench",
            "RESEND_API_URL": bench.fake_url,
            "PROVIDER_RATE_PER_SECOND": str(rate_per_second),
            "TRACKING_SECRET": "bench-tracking-secret-0123456789",
            "AUTH_JWT_SECRET": "bench-jwt-secret-0123456789-abcdefghij",
            "RELAY_INTERVAL_SECONDS": "0.2",
            "TIMERS_POLL_SECONDS": "0.2",
            "API_RATE_LIMITS_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "WORKER_METRICS_PORT": "0",
        }
        migrate(bench.settings)
        create_topics(bench.settings)
        asyncio.run(_sponsor(bench.settings))
        yield bench
    finally:
        stop_processes(bench.children)
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _sponsor(settings: Settings) -> None:
    """The bench sponsor, its leads table empty, and the starter types and rule."""
    engine = create_engine(settings)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO sponsors (id, name, from_email, postal_address) "
                "VALUES (:s, 'Bench', 'bench@sponsor.example', '1 Bench Road')"
            ),
            {"s": SPONSOR},
        )
    async with session_factory(engine).begin() as session:
        await starter.install(session, SPONSOR, StarterIn(team=[TEAM]))
    await engine.dispose()


async def message_counts(settings: Settings) -> dict[str, int]:
    engine = create_engine(settings)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT status, count(*) FROM messages WHERE sponsor_id = :s GROUP BY status"),
            {"s": SPONSOR},
        )
        counts = {status: int(n) for status, n in rows.all()}
    await engine.dispose()
    return counts


def wait_settled(settings: Settings, total: int, within: float) -> float:
    """Wait until ``total`` messages of the sponsor left ``queued``; when (monotonic)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        counts = asyncio.run(message_counts(settings))
        if sum(n for status, n in counts.items() if status != "queued") >= total:
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"messages not settled in {within}s: {counts}")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def fake_messages(bench: Bench, **query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{bench.fake_url}/_fake/messages", params=query, timeout=60)
    rows: list[dict[str, Any]] = response.json()
    return rows
