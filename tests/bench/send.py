"""End-to-end send throughput: planner + senders + a fake provider, all local.

``BENCH_PROVIDER`` picks the fake: ``resend`` (the default), ``mailgun`` or
``sendgrid`` (the last two in batches of ``BENCH_BATCH_SIZE``, default 1000,
one request each).

Loads N leads with one SQL statement, queues one campaign, and times it from
``queued`` to ``sent`` with worker processes as in production (one planner +
relay process, ``BENCH_SENDERS`` sender processes). The fake Resend runs in
its own process with validation and content recording off and no rate limit.
Figures: recipients/s, planner seconds, the senders' peak RSS, the time a
batch spends in each sender stage (from the workers' Prometheus metrics), and
the CPU each kind of process used per recipient while the campaign was sent
(``cpu_us_per_recipient_*``: every process shares the same cores, so this is
where the machine's time goes whatever else runs on it), and the share of the
machine's cores that were busy meanwhile (``machine_busy_share``: below 1.0 the
pipeline left time unused, waiting rather than computing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client import CollectorRegistry, multiprocess
from sqlalchemy import text

from devtools.devstack import DevStack, free_port, stop_processes, wait_for_port
from schemas.http import CampaignIn
from service import outbox
from service.campaigns import logic
from service.cli import migrate
from service.db import create_engine, session_factory
from service.kafka import Producer, create_topics
from service.settings import Settings, settings_from_env
from service.sponsors import repository as sponsors

RECIPIENTS = int(os.environ.get("BENCH_RECIPIENTS", "100000"))
SENDERS = int(os.environ.get("BENCH_SENDERS", "2"))
BODY_KB = int(os.environ.get("BENCH_BODY_KB", "2"))
PROVIDER = os.environ.get("BENCH_PROVIDER", "resend")
BATCH_SIZE = os.environ.get("BENCH_BATCH_SIZE", "100" if PROVIDER == "resend" else "1000")

# What each fake provider needs: its module, and the settings that point at it.
_PROVIDERS: dict[str, tuple[str, dict[str, str]]] = {
    "resend": (
        "tests.fakes.resend_server",
        {"EMAIL_PROVIDER": "resend", "RESEND_API_KEY": "re_bench", "RESEND_API_URL": "{url}"},
    ),
    "mailgun": (
        "tests.fakes.mailgun_server",
        {
            "EMAIL_PROVIDER": "mailgun",
            "MAILGUN_API_KEY": "key-bench",
            "MAILGUN_DOMAIN": "mg.bench.example",
            "MAILGUN_API_URL": "{url}",
        },
    ),
    "sendgrid": (
        "tests.fakes.sendgrid_server",
        {"EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY": "SG.bench", "SENDGRID_API_URL": "{url}"},
    ),
}


def _body(kilobytes: int) -> str:
    paragraph = (
        "Hi {{ name }}, thanks for visiting our booth at the expo. Here is what we "
        "talked about and what {{ company | default('your team') }} could do next.\n\n"
    )
    return paragraph * max(1, kilobytes * 1024 // len(paragraph))


async def _load_leads(settings: Settings, sponsor_id: str, recipients: int) -> None:
    engine = create_engine(settings)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO sponsors (id, name, from_email, postal_address) "
                "VALUES (:s, 'Bench', 'bench@sponsor.example', '1 Bench Road')"
            ),
            {"s": sponsor_id},
        )
        await connection.execute(
            text(
                "INSERT INTO leads (sponsor_id, email, name, company, intent_level) "
                "SELECT :s, 'lead' || n || '@bench.example', 'Lead ' || n, "
                "'Company ' || (n % 100), 'hot' FROM generate_series(1, :n) AS n"
            ),
            {"n": recipients, "s": sponsor_id},
        )
    await engine.dispose()


async def _queue(settings: Settings, sponsor_id: str, body_kb: int) -> uuid.UUID:
    engine = create_engine(settings)
    sessions = session_factory(engine)
    producer = Producer(settings)
    async with outbox.unit_of_work(sessions, producer) as work, work.transaction() as session:
        sponsor = await sponsors.get(session, sponsor_id)
        body = CampaignIn(name="bench", subject="Hello {{ name }}", message_body=_body(body_kb))
        campaign = await logic.create(session, sponsor, body)
    producer.close()
    await engine.dispose()
    return campaign.id


async def _status(settings: Settings, campaign_id: uuid.UUID) -> tuple[str, Any]:
    engine = create_engine(settings)
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT status, planned_at - queued_at, completed_at - planned_at, "
                    "completed_at - queued_at FROM campaigns WHERE id = :id"
                ),
                {"id": campaign_id},
            )
        ).one()
    await engine.dispose()
    return str(row[0]), row


def main() -> dict[str, Any]:
    return run(RECIPIENTS, SENDERS, BODY_KB)


def _stage_seconds(metrics_dir: Path) -> dict[str, float]:
    """Seconds the senders spent per stage, summed over batches and processes."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    totals: dict[str, float] = {}
    for family in registry.collect():
        if family.name == "campaign_send_stage_seconds":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    stage = sample.labels["stage"]
                    totals[stage] = totals.get(stage, 0.0) + sample.value
    return totals


def _role(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    if "--role sender" in command:
        return "senders"
    if "--role" in command:
        return "planner_relay"
    if "resend_server" in command:
        return "fake_resend"
    if "mailgun_server" in command:
        return "fake_mailgun"
    if "sendgrid_server" in command:
        return "fake_sendgrid"
    if "postgres" in process.name():
        return "postgres"
    return "broker"


def _busy_share(before: Any, after: Any) -> float:
    """How busy every core was in between (1.0: no idle time left to use)."""
    idle: float = (after.idle + after.iowait) - (before.idle + before.iowait)
    total: float = sum(after) - sum(before)
    return round(1 - idle / total, 2)


def _cpu_seconds(stack: DevStack) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process of the run, by pid (PostgreSQL's included)."""
    processes = psutil.Process().children(recursive=True)
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        postmaster_pid = int((stack.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(postmaster_pid)
        processes += [postmaster, *postmaster.children(recursive=True)]
    seconds: dict[int, tuple[str, float]] = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[process.pid] = (_role(process), times.user + times.system)
    return seconds


def _cpu_per_recipient(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], recipients: int
) -> dict[str, float]:
    """µs of CPU per recipient by kind of process (processes that exited meanwhile are missed)."""
    totals: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        used = seconds - before.get(pid, (role, 0.0))[1]
        totals[role] = totals.get(role, 0.0) + used
    totals["total"] = sum(totals.values())
    return {
        f"cpu_us_per_recipient_{role}": round(seconds / recipients * 1e6, 1)
        for role, seconds in sorted(totals.items())
    }


def run(recipients: int, senders: int, body_kb: int) -> dict[str, Any]:
    """One campaign of ``recipients`` with a ``body_kb`` body, ``senders`` sender processes."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-send-"))
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    stack = DevStack(workdir, fast=True)
    stack.start()
    fake_port = free_port()
    children: list[subprocess.Popen[bytes]] = []
    try:
        module, provider_env = _PROVIDERS[PROVIDER]
        fake = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(fake_port), "--no-validate"]
        )
        children.append(fake)
        wait_for_port(fake_port)
        url = f"http://127.0.0.1:{fake_port}"
        env = {
            **os.environ,
            **stack.env(),
            **{key: value.format(url=url) for key, value in provider_env.items()},
            "PROVIDER_BATCH_SIZE": BATCH_SIZE,
            "PROVIDER_RATE_PER_SECOND": "100000",
            "TRACKING_SECRET": "bench-tracking-secret-0123456789",
            "LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "WORKER_METRICS_PORT": "0",
        }
        settings = settings_from_env(env)
        migrate(settings)
        create_topics(settings)
        asyncio.run(_load_leads(settings, "warmup", 10))
        asyncio.run(_load_leads(settings, "bench", recipients))
        ctl = [sys.executable, "-m", "service.cli", "worker"]
        children.append(subprocess.Popen([*ctl, "--role", "planner"], env=env))
        children.append(subprocess.Popen([*ctl, "--role", "relay"], env=env))
        processes = [subprocess.Popen([*ctl, "--role", "sender"], env=env) for _ in range(senders)]
        children.extend(processes)
        # A tiny campaign first, so every consumer group has joined before the clock starts.
        _wait_sent(settings, asyncio.run(_queue(settings, "warmup", body_kb)), processes)
        cpu_before, machine_before = _cpu_seconds(stack), psutil.cpu_times()
        campaign_id = asyncio.run(_queue(settings, "bench", body_kb))
        started = time.monotonic()
        row, peak_rss = _wait_sent(settings, campaign_id, processes)
        elapsed = time.monotonic() - started
        cpu = _cpu_per_recipient(cpu_before, _cpu_seconds(stack), recipients)
        busy = _busy_share(machine_before, psutil.cpu_times())
        batches = -(-recipients // settings.provider_batch_size)
        sent = httpx.get(f"http://127.0.0.1:{fake_port}/_fake/stats").json()
        return {
            "provider": PROVIDER,
            "batch_size": settings.provider_batch_size,
            "recipients": recipients,
            "body_kb": body_kb,
            "sender_processes": senders,
            # Bodies as one Resend template per campaign, or whole in every message.
            "resend_templates": settings.resend_templates,
            "messages_at_fake": sent.get("messages"),
            "planner_seconds": round(row[1].total_seconds(), 2),
            "send_seconds": round(row[2].total_seconds(), 2),
            "recipients_per_second_sending": round(recipients / row[2].total_seconds(), 1),
            "recipients_per_second_end_to_end": round(recipients / row[3].total_seconds(), 1),
            "wall_seconds": round(elapsed, 1),
            "sender_peak_rss_mb": round(peak_rss / 2**20, 1),
            # Where a batch's time goes, averaged over batches (batches overlap:
            # each sender works on several at once, so these add up to more
            # than the wall time per batch).
            **{
                f"batch_ms_{stage}": round(seconds / batches * 1000, 2)
                for stage, seconds in sorted(_stage_seconds(metrics_dir).items())
            },
            **cpu,
            "machine_busy_share": busy,
        }
    finally:
        stop_processes(children)
        stack.stop()
        # Gigabytes of database files: a few runs would fill the disk.
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_sent(
    settings: Settings, campaign_id: uuid.UUID, senders: list[subprocess.Popen[bytes]]
) -> tuple[Any, int]:
    peak_rss = 0
    started = time.monotonic()
    while time.monotonic() - started < 1800:
        for proc in senders:
            with contextlib.suppress(psutil.NoSuchProcess):
                peak_rss = max(peak_rss, psutil.Process(proc.pid).memory_info().rss)
        status, row = asyncio.run(_status(settings, campaign_id))
        if status == "sent":
            return row, peak_rss
        time.sleep(0.5)
    raise TimeoutError(f"campaign {campaign_id} was not sent in time")
