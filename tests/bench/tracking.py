"""Tracking hot paths: pixel + click throughput with 2 API processes, every event ingested.

Starts the local stack, writes one sent campaign (``BENCH_TRACKING_DELIVERIES``
rows, 3 links), serves the API with ``campaignctl api --workers 2`` and runs
one ingester process. The load is half pixel, half click, over
``BENCH_TRACKING_CONNECTIONS`` keep-alive connections (32), for
``BENCH_TRACKING_SECONDS``, ``BENCH_TRACKING_RUNS`` times (3; the figures
are the medians, the runs are listed: the machine is shared, one run alone
says little). The load comes from ``wrk`` when it is installed (Debian's
``wrk`` package) with one thread: the load generator shares the cores with
the server, the broker, the ingester and PostgreSQL, and one C thread
drives well over the target while a second only takes CPU from them. Without
``wrk``, a small raw-asyncio HTTP/1.1 keep-alive client in
``BENCH_TRACKING_CLIENTS`` processes (httpx alone cannot produce the load).
Figures: requests/s, p50/p99 latency, and the number of events in
``delivery_events`` against the number of genuine hits.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from devtools.devstack import DevStack, free_port, stop_processes, wait_for_port
from service.cli import migrate
from service.db import create_engine
from service.kafka import create_topics
from service.settings import Settings, settings_from_env
from service.tracking.tokens import Kind

DELIVERIES = int(os.environ.get("BENCH_TRACKING_DELIVERIES", "2000"))
SECONDS = float(os.environ.get("BENCH_TRACKING_SECONDS", "10"))
CLIENTS = int(os.environ.get("BENCH_TRACKING_CLIENTS", "2"))
CONNECTIONS = int(os.environ.get("BENCH_TRACKING_CONNECTIONS", "32"))
RUNS = int(os.environ.get("BENCH_TRACKING_RUNS", "3"))


async def _setup(settings: Settings) -> list[int]:
    engine = create_engine(settings)
    campaign_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO sponsors (id, name, from_email) "
                "VALUES ('bench', 'Bench', 'bench@sponsor.example')"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO campaigns (id, sponsor_id, name, subject, audience_type, status) "
                "VALUES (:id, 'bench', 'bench', 'Hi', 'all', 'sent')"
            ),
            {"id": campaign_id},
        )
        rows = await connection.execute(
            text(
                "INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, "
                "batch_no, status, sent_at) SELECT :id, n, 'r' || n || '@bench.example', "
                "n / 100, 'sent', now() - interval '1 day' FROM generate_series(1, :n) n "
                "RETURNING id"
            ),
            {"id": campaign_id, "n": DELIVERIES},
        )
        ids = [int(r[0]) for r in rows]
        for position in range(3):
            await connection.execute(
                text("INSERT INTO campaign_links VALUES (:c, :p, :u)"),
                {"c": campaign_id, "p": position, "u": f"https://sponsor.example/{position}"},
            )
    await engine.dispose()
    return ids


def _paths(settings: Settings, ids: list[int]) -> list[bytes]:
    signer = settings.tracking_signer()
    rng = random.Random(1)
    paths = []
    for _ in range(4000):
        delivery_id = rng.choice(ids)
        if rng.random() < 0.5:
            paths.append(f"/o/{signer.sign(Kind.OPEN, delivery_id)}".encode())
        else:
            paths.append(f"/c/{signer.sign(Kind.CLICK, delivery_id, rng.randrange(3))}".encode())
    return paths


async def _connection(
    port: int,
    paths: list[bytes],
    until: float,
    latencies: list[float],
    errors: list[int],
    limit: int | None = None,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = start = random.randrange(len(paths))
    agent = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0"
    try:
        while time.perf_counter() < until and (limit is None or i - start < limit):
            path = paths[i % len(paths)]
            i += 1
            started = time.perf_counter()
            writer.write(
                b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\nUser-Agent: " + agent + b"\r\n\r\n"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not (head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.1 302")):
                errors.append(1)
    finally:
        writer.close()


def _client(
    port: int, paths: list[bytes], until: float, queue: Any, limit: int | None = None
) -> None:
    latencies: list[float] = []
    errors: list[int] = []

    async def run() -> None:
        await asyncio.gather(
            *(
                _connection(port, paths, until, latencies, errors, limit)
                for _ in range(max(CONNECTIONS // CLIENTS, 1))
            )
        )

    asyncio.run(run())
    queue.put((latencies, len(errors)))


async def _in_process(settings: Settings, paths: list[bytes], n: int = 20_000) -> float:
    """Requests/s of the middleware alone (no HTTP server, no client): the handler's cost."""
    from service.tracking.emitter import Emitter
    from service.tracking.fastpath import TrackingFastPath, TrackingHub

    engine = create_engine(settings)
    emitter = Emitter(settings)

    class _App:
        class state:
            tracking = TrackingHub(settings, engine, emitter)

    async def inner(_scope: Any, _receive: Any, _send: Any) -> None:
        raise AssertionError("not a tracking path")

    middleware = TrackingFastPath(inner, _App.state)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_message: Any) -> None:
        return None

    headers = [(b"host", b"bench"), (b"user-agent", b"Mozilla/5.0 Chrome/120.0")]
    scopes = [
        {
            "type": "http",
            "method": "GET",
            "path": path.decode(),
            "headers": headers,
            "client": ("203.0.113.7", 5000),
        }
        for path in paths
    ]
    for scope in scopes:  # warm the link cache
        await middleware(scope, receive, send)
    started = time.perf_counter()
    for i in range(n):
        await middleware(scopes[i % len(scopes)], receive, send)
    elapsed = time.perf_counter() - started
    await asyncio.to_thread(emitter.close)
    await engine.dispose()
    return n / elapsed


async def _ingested(settings: Settings) -> int:
    engine = create_engine(settings)
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM delivery_events WHERE type IN ('open', 'click')")
        )
    await engine.dispose()
    return int(count or 0)


def main() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    stack = DevStack(workdir, fast=True)
    stack.start()
    children: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        env = {
            **os.environ,
            **stack.env(),
            "TRACKING_SECRET": "bench-tracking-secret-0123456789",
            "IP_HASH_SECRET": "bench-ip-secret",
            "TRACKING_SPOOL_DIR": str(workdir / "spool"),
            "AUTH_JWT_SECRET": "bench-jwt-secret-0123456789",
            "LOG_LEVEL": "WARNING",
        }
        settings = settings_from_env(env)
        migrate(settings)
        create_topics(settings)
        ids = asyncio.run(_setup(settings))
        paths = _paths(settings, ids)
        handler_rps = asyncio.run(
            _in_process(
                settings.model_copy(update={"tracking_spool_dir": str(workdir / "s0")}), paths
            )
        )
        ctl = [sys.executable, "-m", "service.cli"]
        children.append(
            subprocess.Popen([*ctl, "api", "--port", str(port), "--workers", "2"], env=env)
        )
        children.append(subprocess.Popen([*ctl, "worker", "--role", "ingester"], env=env))
        wait_for_port(port)
        time.sleep(2)
        # Warm-up: fills the link caches of both processes and the ingester's group join.
        # Every connection clicks every link once, so whichever process it lands on
        # serves the measured runs from its link cache, not from PostgreSQL.
        clicks = [path for path in paths if path.startswith(b"/c/")]
        queue: Any = multiprocessing.Queue()
        _client(port, clicks, time.perf_counter() + 60, queue, limit=len(clicks))
        warm_hits = len(queue.get()[0])
        # Measure the steady state: the ingester has joined its group and taken in what
        # the setup produced (the in-process run and the warm-up), not a backlog.
        _wait_ingested(settings, warm_hits + 20_000 + len(paths), 120)
        load = _wrk if shutil.which("wrk") else _python_clients
        measured = _median([load(port, paths, workdir) for _ in range(RUNS)])
        expected = measured["requests"] + warm_hits + 20_000 + len(paths)
        ingest_started = time.monotonic()
        ingested = _wait_ingested(settings, expected, 300)
        return {
            "handler_only_requests_per_second": round(handler_rps, 1),
            "api_processes": 2,
            **measured,
            "events_expected": expected,
            "events_ingested": ingested,
            "ingest_lag_seconds": round(time.monotonic() - ingest_started, 1),
        }
    finally:
        stop_processes(children)
        stack.stop()
        # Gigabytes of database files: a few runs would fill the disk.
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ingested(settings: Settings, expected: int, seconds: float) -> int:
    """Events ingested once ``expected`` are there, or when ``seconds`` have passed."""
    until = time.monotonic() + seconds
    while True:
        ingested = asyncio.run(_ingested(settings))
        if ingested >= expected or time.monotonic() > until:
            return ingested
        time.sleep(1)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the runs' rates and latencies; requests and errors are totals."""
    first = runs[0]
    return {
        "load_generator": first["load_generator"],
        "connections": first["connections"],
        "runs": len(runs),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "requests_per_second": statistics.median(r["requests_per_second"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "requests_per_second_by_run": " / ".join(f"{r['requests_per_second']:,.0f}" for r in runs),
        "p99_ms_by_run": " / ".join(f"{r['p99_ms']:.1f}" for r in runs),
    }


def _wrk(port: int, paths: list[bytes], workdir: Path) -> dict[str, Any]:
    """wrk (C, from the distribution) as the load: one thread leaves the cores to the rest."""
    script = workdir / "paths.lua"
    listed = ",".join(f'"{p.decode()}"' for p in paths)
    script.write_text(
        f"local paths = {{{listed}}}\nlocal i = math.random(#paths)\n"
        "request = function()\n  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i])\nend\n'
    )
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(CONNECTIONS), "-d", f"{SECONDS:.0f}s",
         "--latency", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def ms(label: str) -> float:
        value = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert value, out
        return float(value[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[value[2]]

    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert total and rate, out
    return {
        "load_generator": "wrk, 1 thread",
        "connections": CONNECTIONS,
        "requests": int(total[1]),
        "errors": int(errors[1]) if errors else 0,
        "requests_per_second": float(rate[1]),
        "p50_ms": round(ms("50%"), 2),
        "p99_ms": round(ms("99%"), 2),
    }


def _python_clients(port: int, paths: list[bytes], _workdir: Path) -> dict[str, Any]:
    """The fallback load: raw-asyncio keep-alive clients in ``CLIENTS`` processes."""
    queue: Any = multiprocessing.Queue()
    until = time.perf_counter() + SECONDS
    procs = [
        multiprocessing.Process(target=_client, args=(port, paths, until, queue))
        for _ in range(CLIENTS)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    latencies = sorted(x for r in results for x in r[0])
    total = len(latencies)
    return {
        "load_generator": f"python, {CLIENTS} processes",
        "connections": CLIENTS * max(CONNECTIONS // CLIENTS, 1),
        "requests": total,
        "errors": sum(r[1] for r in results),
        "requests_per_second": round(total / elapsed, 1),
        "p50_ms": round(latencies[total // 2] * 1000, 2),
        "p99_ms": round(latencies[int(total * 0.99)] * 1000, 2),
    }
