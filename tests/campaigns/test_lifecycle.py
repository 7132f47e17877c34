"""Startup waits, the API's drain setting and connection spread, multi-process metrics.

The worker's SIGTERM drain (no duplicate, nothing stranded) is proven on real
worker processes in ``tests/sending/test_recovery.py``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.devstack import DevStack
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


ESTABLISHED, LISTEN = "01", "0A"  # TCP states as /proc/net/tcp writes them


def _sockets_of(pid: int, port: int, state: str = ESTABLISHED) -> int:
    """TCP sockets in ``state`` on local ``port`` that process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink()) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state and fields[9] in inodes:
                count += 1
    return count


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")
def test_api_processes_each_take_a_share_of_the_connections(
    stack: DevStack, migrated: Settings, tmp_path: Path
) -> None:
    """Keep-alive clients connecting at once are spread over the API processes, and
    SIGTERM still stops them all."""
    port = _closed_port()
    env = {
        **os.environ,
        **stack.env(),
        "KAFKA_TOPIC_PREFIX": migrated.kafka_topic_prefix,
        "TRACKING_SECRET": "lifecycle-tracking-secret-0123456789",
        "AUTH_JWT_SECRET": "lifecycle-jwt-secret-0123456789",
        "TRACKING_SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_LEVEL": "WARNING",
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--port", str(port), "--workers", "2"],
        env=env,
    )
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                    if probe.recv(1024).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        # One process answering is not both listening: a slow machine may still be
        # starting the other, which would then get no connection at all.
        children_path = Path(f"/proc/{api.pid}/task/{api.pid}/children")

        def listening() -> int:
            children = children_path.read_text().split()
            return sum(_sockets_of(int(child), port, LISTEN) > 0 for child in children)

        while listening() < 2:
            assert time.monotonic() < deadline, "both API processes did not start"
            time.sleep(0.2)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        for client in clients:
            assert client.recv(1024).startswith(b"HTTP/1.1 200")
        children = children_path.read_text().split()
        shares = [_sockets_of(int(child), port) for child in children]
        shares = [share for share in shares if share]
        # An even spread is 20 each; one shared accept queue gave 29 to 3 and worse.
        assert len(shares) == 2 and min(shares) >= 8, shares
    finally:
        for client in clients:
            client.close()
        api.terminate()
        assert api.wait(60) == 0
