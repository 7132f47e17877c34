"""Audience preview at scale, and CSV import of a large file.

Loads ``BENCH_LEADS`` leads (1,000,000 by default) for one sponsor with one SQL
statement, plus suppressions and another sponsor's leads, then times the
dashboard's live count (``POST …/audiences/preview``'s query: exact count +
10-lead sample, suppressed addresses left out) for every preset and typical
custom filters: p50/p95 over repeated runs, after the time and memory the
first custom count takes to build the sponsor's in-memory index. Then imports a generated CSV file
of ``BENCH_IMPORT_ROWS`` rows through the same code as ``campaignctl
import-leads`` and reports rows/s, the process's peak RSS growth, and the CPU
time per row of the database backend and of the Python process.

``BENCH_AUDIENCES=import`` (or ``preview``) runs one part only; with
``BENCH_LEADS=0`` the import then runs alone on an empty database.
"""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text

from devtools.devstack import DevStack
from service.audiences import live
from service.audiences import repository as audiences
from service.audiences.filter_language import parse_filter
from service.cli import migrate
from service.db import create_engine, session_factory
from service.leads.csv_import import import_csv
from service.settings import Settings, settings_from_env

LEADS = int(os.environ.get("BENCH_LEADS", "1000000"))
IMPORT_ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "1000000"))
RUNS = int(os.environ.get("BENCH_PREVIEW_RUNS", "30"))
PARTS = frozenset(os.environ.get("BENCH_AUDIENCES", "preview,import").split(","))

AUDIENCES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "all": ("all", None),
    "hot": ("hot", None),
    "warm": ("warm", None),
    "cold": ("cold", None),
    "new": ("new", None),
    "contacted": ("contacted", None),
    "seed_shorthand": (
        "custom",
        {"intent_score_min": 50, "intent_score_max": 100, "tags": ["enterprise"]},
    ),
    "hot_or_warm_at_event": (
        "custom",
        {
            "all": [
                {"field": "intent_level", "op": "in", "value": ["hot", "warm"]},
                {"field": "event_id", "op": "eq", "value": "expo-3"},
            ]
        },
    ),
    "score_and_not_contacted": (
        "custom",
        {
            "all": [
                {"field": "intent_score", "op": "gte", "value": 80},
                {"not": {"field": "follow_up_status", "op": "ne", "value": "new"}},
            ]
        },
    ),
    "attribute_region": ("custom", {"field": "attributes.region", "op": "eq", "value": "EU"}),
    "recent_vips": (
        "custom",
        {
            "all": [
                {"field": "tags", "op": "contains_all", "value": ["vip", "enterprise"]},
                {"field": "created_at", "op": "gte", "value": "2026-06-01"},
            ]
        },
    ),
    "company_ilike": ("custom", {"field": "company", "op": "ilike", "value": "company 12%"}),
    "attribute_size_range": (
        "custom",
        {"field": "attributes.size", "op": "between", "value": [100, 150]},
    ),
    "event_only": ("custom", {"field": "event_id", "op": "eq", "value": "expo-7"}),
    "created_fortnight": (
        "custom",
        {"field": "created_at", "op": "between", "value": ["2026-03-01", "2026-03-15"]},
    ),
    "any_of_three": (
        "custom",
        {
            "any": [
                {"field": "tags", "op": "contains_any", "value": ["partner"]},
                {"field": "attributes.region", "op": "eq", "value": "APAC"},
                {"field": "intent_score", "op": "lt", "value": 10},
            ]
        },
    ),
}

_LOAD = """
INSERT INTO leads (sponsor_id, email, name, company, title, intent_level, intent_score, tags,
                   follow_up_status, event_id, attributes, created_at)
SELECT :sponsor, 'lead' || n || '@bench.example', 'Lead ' || n, 'Company ' || (n % 1000),
       (ARRAY['CTO', 'VP Sales', 'Engineer', NULL])[1 + n % 4],
       (ARRAY['hot', 'warm', 'cold', 'warm', 'cold', NULL])[1 + n % 6],
       CASE WHEN n % 10 = 0 THEN NULL ELSE (n * 7) % 101 END,
       CASE n % 5 WHEN 0 THEN ARRAY['enterprise'] WHEN 1 THEN ARRAY['smb']
                  WHEN 2 THEN ARRAY['vip', 'enterprise'] WHEN 3 THEN ARRAY['partner']
                  ELSE ARRAY[]::text[] END,
       (ARRAY['new', 'new', 'new', 'contacted', 'won'])[1 + (n / 7) % 5],
       'expo-' || (n % 20),
       jsonb_build_object('region', (ARRAY['EU', 'US', 'APAC'])[1 + n % 3], 'size', n % 500),
       TIMESTAMPTZ '2026-01-01' + make_interval(mins => (n * 37) % 525600)
FROM generate_series(1, :n) AS n
"""


async def _load(settings: Settings) -> None:
    engine = create_engine(settings)
    async with engine.begin() as connection:
        for sponsor in ("bench", "other"):
            await connection.execute(
                text("INSERT INTO sponsors (id, name, from_email) VALUES (:s, 'B', 'b@b.example')"),
                {"s": sponsor},
            )
        await connection.execute(text(_LOAD), {"sponsor": "bench", "n": LEADS})
        await connection.execute(text(_LOAD), {"sponsor": "other", "n": LEADS // 10})
        await connection.execute(
            text(
                "INSERT INTO suppressions (sponsor_id, email, reason) "
                "SELECT CASE WHEN n % 2 = 0 THEN 'bench' END, "
                "'lead' || (n * 97) || '@bench.example', 'unsubscribed' "
                "FROM generate_series(1, 10000) AS n"
            )
        )
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE leads"))
        await autocommit.execute(text("VACUUM ANALYZE suppressions"))
    await engine.dispose()


async def _time_preview(
    settings: Settings, audience_type: str, audience_filter: Any, budget_ms: int, runs: int
) -> tuple[list[float], str]:
    """Timings of ``runs`` previews, and the last answer as shown in the figures."""
    engine = create_engine(settings)
    sessions = session_factory(engine)
    timings: list[float] = []
    shown = ""
    try:
        for run in range(runs + 2):
            started = time.perf_counter()
            async with sessions.begin() as session:
                answer = await audiences.preview(
                    session, "bench", audience_type, audience_filter, budget_ms
                )
            if run >= 2:  # the first two warm the caches and the connection
                timings.append((time.perf_counter() - started) * 1000)
            shown = f"count {answer.count:,}"
            if not answer.exact:
                shown += f" ± {answer.error_bound:,} (estimate, {answer.confidence:.0%})"
    finally:
        await engine.dispose()
    return sorted(timings), shown


def _p95(timings: list[float]) -> float:
    return round(timings[max(0, round(len(timings) * 0.95) - 1)], 1)


async def _index_build(settings: Settings) -> dict[str, Any]:
    """The first custom count of the sponsor in this process: the in-memory index is built."""
    engine = create_engine(settings)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    _type, audience_filter = AUDIENCES["seed_shorthand"]
    try:
        started = time.perf_counter()
        async with session_factory(engine).begin() as session:
            await live.count(session, "bench", parse_filter(audience_filter), wait=True)
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    return {
        "index_build_seconds": round(elapsed, 1),
        "index_rss_growth_mb": round((process.memory_info().rss - rss_before) / 2**20, 1),
    }


async def _previews(settings: Settings) -> dict[str, Any]:
    """As the API answers (exact within the budget, else an estimate), then always exact."""
    figures: dict[str, Any] = {"preview_exact_budget_ms": settings.audience_preview_exact_ms}
    figures.update(await _index_build(settings))
    for name, (audience_type, audience_filter) in AUDIENCES.items():
        timings, shown = await _time_preview(
            settings, audience_type, audience_filter, settings.audience_preview_exact_ms, RUNS
        )
        exact_timings, exact_shown = await _time_preview(
            settings, audience_type, audience_filter, 0, max(3, RUNS // 5)
        )
        figures[f"preview_{name}"] = (
            f"p50 {statistics.median(timings):.1f} ms, p95 {_p95(timings)} ms, {shown}"
        )
        figures[f"preview_{name}_exact_only"] = (
            f"p50 {statistics.median(exact_timings):.1f} ms, p95 {_p95(exact_timings)} ms, "
            f"{exact_shown}"
        )
    return figures


def _write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["email", "name", "company", "intent_level", "intent_score", "tags", "booth"]
        )
        for n in range(rows):
            writer.writerow(
                [
                    f"import{n}@bench.example",
                    f"Lead {n}",
                    f"Company {n % 1000}, Inc",
                    ("hot", "warm", "cold")[n % 3],
                    n % 101,
                    "vip;enterprise" if n % 4 == 0 else "smb",
                    f"B{n % 50}",
                ]
            )


async def _import(settings: Settings, path: str, size: int) -> dict[str, Any]:
    engine = create_engine(settings)
    sessions = session_factory(engine)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak = rss_before

    def progress(_done: int) -> None:
        nonlocal peak
        peak = max(peak, process.memory_info().rss)

    try:
        async with sessions.begin() as session:
            await session.execute(
                text(
                    "INSERT INTO sponsors (id, name, from_email) "
                    "VALUES ('import', 'I', 'i@i.example')"
                )
            )
        started = time.perf_counter()
        with open(path, "rb") as file:  # noqa: ASYNC230 - the importer reads in a thread
            async with sessions.begin() as session:
                backend = psutil.Process(await session.scalar(text("SELECT pg_backend_pid()")))
                # CPU time, unlike wall time, hardly moves with what else the machine runs.
                db_cpu, python_cpu = _cpu(backend), _cpu(process)
                result = await import_csv(session, "import", file, progress)
                db_cpu, python_cpu = _cpu(backend) - db_cpu, _cpu(process) - python_cpu
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    return {
        "import_rows": result.rows,
        "import_inserted": result.inserted,
        "import_rejected": result.rejected_count,
        "import_file_mb": round(size / 2**20, 1),
        "import_seconds": round(elapsed, 1),
        "import_rows_per_second": round(result.rows / elapsed),
        "import_peak_rss_growth_mb": round((peak - rss_before) / 2**20, 1),
        "import_db_cpu_us_per_row": round(db_cpu / result.rows * 1e6, 1),
        "import_python_cpu_us_per_row": round(python_cpu / result.rows * 1e6, 1),
    }


def _cpu(process: psutil.Process) -> float:
    """The process's CPU time (user + system, all threads), in seconds."""
    times = process.cpu_times()
    return float(times.user + times.system)


def main() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-audiences-"))
    stack = DevStack(workdir, fast=True)
    stack.start()
    try:
        settings = settings_from_env({**os.environ, **stack.env()})
        migrate(settings)
        started = time.perf_counter()
        asyncio.run(_load(settings))
        figures: dict[str, Any] = {
            "leads": LEADS,
            "load_and_vacuum_seconds": round(time.perf_counter() - started, 1),
        }
        if "preview" in PARTS:
            figures.update(asyncio.run(_previews(settings)))
        if IMPORT_ROWS and "import" in PARTS:
            path = workdir / "leads.csv"
            _write_csv(path, IMPORT_ROWS)
            figures.update(asyncio.run(_import(settings, str(path), path.stat().st_size)))
        return figures
    finally:
        stack.stop()
        # Gigabytes of database files: a few runs would fill the disk.
        shutil.rmtree(workdir, ignore_errors=True)
