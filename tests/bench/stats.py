"""Stats latency with many delivery rows, and the analysts' view over 1,000 campaigns.

Loads ``BENCH_STATS_ROWS`` delivery rows (default 10,000,000; a couple of
minutes) into one campaign, with its counters, links and a month of hourly
timeline, plus ``BENCH_STATS_CAMPAIGNS`` (1,000) small campaigns for the
analysts' view. Serves the API in one process and times requests end to end
over keep-alive HTTP. The stats never scan deliveries, so the row count
should not matter; the figure shows it.
"""

from __future__ import annotations

import asyncio
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
from sqlalchemy import text

from devtools.devstack import DevStack, free_port, wait_for_port
from service.auth import mint_token
from service.cli import migrate
from service.db import create_engine
from service.kafka import create_topics
from service.settings import Settings, settings_from_env

ROWS = int(os.environ.get("BENCH_STATS_ROWS", "10000000"))
CAMPAIGNS = int(os.environ.get("BENCH_STATS_CAMPAIGNS", "1000"))
REQUESTS = int(os.environ.get("BENCH_STATS_REQUESTS", "300"))


async def _load(settings: Settings) -> uuid.UUID:
    engine = create_engine(settings)
    big = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO sponsors (id, name, from_email) VALUES ('bench', 'B', 'b@x.example')")
        )
        await connection.execute(
            text(
                "INSERT INTO campaigns (id, sponsor_id, name, subject, audience_type, status, "
                "total_recipients, event_id) VALUES (:id, 'bench', 'big', 'Hi', 'all', 'sent', "
                ":n, 'expo')"
            ),
            {"id": big, "n": ROWS},
        )
        await connection.execute(
            text(
                "INSERT INTO campaigns (id, sponsor_id, name, subject, audience_type, status, "
                "total_recipients, event_id, created_at) SELECT gen_random_uuid(), 'bench', "
                "'c' || n, 'Hi', 'all', 'sent', 1000, 'expo', now() - make_interval(mins => n) "
                "FROM generate_series(1, :n) n"
            ),
            {"n": CAMPAIGNS},
        )
        await connection.execute(
            text(
                "INSERT INTO campaign_stats (campaign_id, shard, sent, delivered, bounced, "
                "opened, opens, human_opened, clicked, clicks, human_clicked) "
                "SELECT c.id, s, 1000, 980, 5, 400, 700, 300, 100, 150, 90 "
                "FROM campaigns c, generate_series(0, 15) s"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO campaign_links (campaign_id, position, url, clicks) "
                "SELECT :id, p, 'https://sponsor.example/' || p, p * 10 "
                "FROM generate_series(0, 19) p"
            ),
            {"id": big},
        )
        await connection.execute(
            text(
                "INSERT INTO campaign_stats_hourly (campaign_id, bucket, opens, clicks) "
                "SELECT :id, date_trunc('hour', now()) - make_interval(hours => h), 10, 2 "
                "FROM generate_series(0, 24 * 30) h"
            ),
            {"id": big},
        )
    async with engine.begin() as connection:
        step = 1_000_000
        for start in range(0, ROWS, step):
            await connection.execute(
                text(
                    "INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, "
                    "batch_no, status, sent_at, delivered_at) SELECT :id, n, "
                    "'r' || n || '@bench.example', n / 100, 'delivered', now(), now() "
                    "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) n"
                ),
                {"id": big, "a": start + 1, "b": min(start + step, ROWS)},
            )
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE"))
    await engine.dispose()
    return big


def _timed(client: httpx.Client, url: str, headers: dict[str, str], n: int) -> dict[str, float]:
    for _ in range(10):
        client.get(url, headers=headers).raise_for_status()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        client.get(url, headers=headers).raise_for_status()
        times.append(time.perf_counter() - started)
    times.sort()
    return {
        "p50_ms": round(times[len(times) // 2] * 1000, 2),
        "p95_ms": round(times[int(len(times) * 0.95)] * 1000, 2),
    }


def main() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    stack = DevStack(workdir, fast=True)
    stack.start()
    api = None
    try:
        env = {
            **os.environ,
            **stack.env(),
            "TRACKING_SECRET": "bench-tracking-secret-0123456789",
            "TRACKING_SPOOL_DIR": str(workdir / "spool"),
            "AUTH_JWT_SECRET": "bench-jwt-secret-0123456789",
            "LOG_LEVEL": "WARNING",
            # Counted as in production (one upsert per request), never reached.
            "API_RATE_READ_PER_MINUTE": "100000000",
        }
        settings = settings_from_env(env)
        migrate(settings)
        create_topics(settings)
        load_started = time.monotonic()
        big = asyncio.run(_load(settings))
        load_seconds = time.monotonic() - load_started
        port = free_port()
        api = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "api", "--port", str(port)], env=env
        )
        wait_for_port(port)
        jwt = mint_token(settings, subject="bench", scopes=["stats:read"], sponsor_ids=["bench"])
        headers = {"Authorization": f"Bearer {jwt}"}
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            stats_url = f"/api/v1/sponsors/bench/campaigns/{big}/stats"
            plain = _timed(client, stats_url, headers, REQUESTS)
            hourly = _timed(client, stats_url + "?timeline=hour", headers, REQUESTS // 3)
            analyst_url = f"/api/v1/stats/campaigns?sponsor_id=bench&limit={CAMPAIGNS + 1}"
            analyst = _timed(client, analyst_url, headers, 30)
            rows = len(client.get(analyst_url, headers=headers).json()["items"])
            rss_before = psutil.Process(api.pid).memory_info().rss
            rss_peak = rss_before
            lines = 0
            started = time.perf_counter()
            csv_url = f"/api/v1/sponsors/bench/campaigns/{big}/deliveries?format=csv"
            with client.stream("GET", csv_url, headers=headers) as response:
                for index, chunk in enumerate(response.iter_bytes()):
                    lines += chunk.count(b"\n")
                    if index % 20 == 0:
                        rss_peak = max(rss_peak, psutil.Process(api.pid).memory_info().rss)
            csv_seconds = time.perf_counter() - started
        return {
            "delivery_rows": ROWS,
            "load_seconds": round(load_seconds, 1),
            "stats_p50_ms": plain["p50_ms"],
            "stats_p95_ms": plain["p95_ms"],
            "stats_with_hourly_timeline_p95_ms": hourly["p95_ms"],
            "analyst_campaigns": rows,
            "analyst_p50_ms": analyst["p50_ms"],
            "analyst_p95_ms": analyst["p95_ms"],
            "csv_rows": lines - 1,
            "csv_seconds": round(csv_seconds, 1),
            "csv_api_rss_growth_mb": round((rss_peak - rss_before) / 2**20, 1),
        }
    finally:
        if api is not None:
            api.terminate()
            api.wait(20)
        stack.stop()
        # Gigabytes of database files: a few runs would fill the disk.
        shutil.rmtree(workdir, ignore_errors=True)
