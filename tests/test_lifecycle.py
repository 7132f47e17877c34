"""Startup waits, the API's drain setting, multi-process metrics.

The worker's SIGTERM drain (no duplicate, nothing stranded) is proven on real
worker processes in ``tests/test_recovery.py``.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from service import cli
from service.db import create_engine
from service.settings import Settings, get_settings
from service.startup import missing_dependencies, wait_for_dependencies


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_startup_returns_at_once_when_everything_answers(migrated: Settings) -> None:
    engine = create_engine(migrated)
    try:
        started = time.monotonic()
        await wait_for_dependencies(migrated, engine)
        assert time.monotonic() - started < 5
    finally:
        await engine.dispose()


async def test_startup_waits_then_names_the_missing_kafka(migrated: Settings) -> None:
    settings = migrated.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{_closed_port()}",
            "startup_wait_seconds": 2.0,
        }
    )
    engine = create_engine(settings)
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=r"gave up waiting for kafka") as error:
            await wait_for_dependencies(settings, engine)
        assert time.monotonic() - started >= 2.0
        assert "database" not in str(error.value)
    finally:
        await engine.dispose()


async def test_startup_names_a_missing_database(migrated: Settings) -> None:
    url = migrated.database_url.rsplit("@", 1)[0] + f"@127.0.0.1:{_closed_port()}/campaigns"
    settings = migrated.model_copy(update={"database_url": url})
    engine = create_engine(settings)
    try:
        missing = await missing_dependencies(settings, engine)
        assert set(missing) == {"database"}
    finally:
        await engine.dispose()


async def test_startup_goes_on_once_the_dependency_appears(migrated: Settings) -> None:
    """The broker comes up while we wait: no crash, startup completes."""
    port = _closed_port()
    settings = migrated.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{port}", "startup_wait_seconds": 30.0}
    )
    engine = create_engine(settings)
    waiting = asyncio.create_task(wait_for_dependencies(settings, engine))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    # "The broker appears": point the settings the waiter reads at the real one.
    object.__setattr__(settings, "kafka_bootstrap_servers", migrated.kafka_bootstrap_servers)
    try:
        await asyncio.wait_for(waiting, 25)
    finally:
        await engine.dispose()


def test_the_api_drains_for_the_configured_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setenv("API_SHUTDOWN_GRACE_SECONDS", "17")
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setattr("service.logs.configure", lambda *args: None)  # keep pytest's handlers
    get_settings.cache_clear()
    try:
        cli.main(["api", "--port", "8123"])
    finally:
        get_settings.cache_clear()
    assert seen["timeout_graceful_shutdown"] == 17
    assert seen["port"] == 8123


def test_metrics_from_several_processes_add_up(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, a scrape sees every process's samples."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    count = textwrap.dedent(
        """
        from service import metrics
        metrics.MESSAGES_SENT.labels("outbox").inc(5)
        """
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    scrape = "from service import metrics; print(metrics.render().decode())"
    output = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True
    ).stdout.decode()
    assert 'campaign_messages_sent_total{provider="outbox"} 10.0' in output
