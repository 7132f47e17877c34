"""``campaignctl``: the one command to serve, work, migrate and run locally."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, SupportsIndex

from service.settings import Settings, get_settings


def migrate(settings: Settings) -> None:
    """Upgrade the database to the newest migration."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(Path(__file__).resolve().parent.parent / "migrations" / "alembic.ini"))
    # The option is interpolated: a percent-encoded password needs its % doubled.
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    sock = _ListenerPerProcess(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class _ListenerPerProcess(socket.socket):
    """The API's address, bound anew (``SO_REUSEPORT``) by each process it is handed to.

    uvicorn gives its worker processes the parent's socket, so they share one
    accept queue: whichever process wakes first takes a whole burst of
    connections, and with keep-alive clients (a proxy, a load generator) one
    process can serve most of them while the other idles. Each worker
    unpickling this binds a socket of its own instead, and the kernel spreads
    new connections evenly over the workers' sockets. The parent's socket
    only holds the address (it never listens, so it takes no connections).
    """

    def __reduce_ex__(self, _protocol: SupportsIndex) -> tuple[Any, ...]:
        host, port = self.getsockname()[:2]
        return (_reuse_port_socket, (host, port))


def _api(args: argparse.Namespace) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from service.logs import logging_config

    settings = get_settings()
    options: dict[str, Any] = {
        "factory": True,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "log_level": "warning",
        # In-flight requests get this long to finish after SIGTERM (k8s sends it, then waits
        # terminationGracePeriodSeconds, which must be larger).
        "timeout_graceful_shutdown": settings.api_shutdown_grace_seconds,
        "log_config": logging_config(settings.log_level, settings.log_format),
    }
    if args.workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run("service.app:create_app", **options)
        return
    config = uvicorn.Config("service.app:create_app", **options)
    try:
        listener = _reuse_port_socket(args.host, args.port)
    except OSError as exc:
        sys.exit(f"cannot listen on {args.host}:{args.port}: {exc}")
    Multiprocess(config, sockets=[listener]).run()


def _worker(args: argparse.Namespace) -> None:
    from worker.main import ROLES, main

    main(get_settings(), [args.role] if args.role else list(ROLES))


def _devtools(module: str) -> Any:
    """A module of the development tools, or exit with how to get them.

    ``devtools`` (local stack, demo, terminal view) is not in the production
    package or image: a missing import is a missing install, not a bug.
    """
    import importlib

    try:
        return importlib.import_module(f"devtools.{module}")
    except ImportError as exc:
        sys.exit(
            f"campaignctl: this command needs the development tools, which are not installed "
            f"({exc}). From a checkout: make run, or pip install -e '.[dev]' -e ./devtools "
            f"(docs/development.md)."
        )


def _status(args: argparse.Namespace) -> None:
    run_status = _devtools("status").run_status
    sys.exit(run_status(get_settings(), once=args.once, interval=args.interval))


def _migrate(_args: argparse.Namespace) -> None:
    migrate(get_settings())
    print("database is at the newest migration")


def _kafka_init(_args: argparse.Namespace) -> None:
    from service.kafka import create_topics

    created = create_topics(get_settings())
    print(f"created {len(created)} topic(s): {', '.join(created) or 'none needed'}")


def _devstack(args: argparse.Namespace) -> None:
    devstack = _devtools("devstack")
    stack = devstack.DevStack(Path(args.dir))
    try:
        stack.start()
    except devstack.DevStackError as exc:
        sys.exit(f"campaignctl devstack: {exc}")
    for key, value in stack.env().items():
        print(f"export {key}={value}")
    sys.stdout.flush()
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        stopped.wait()
    finally:
        stack.stop()


def _token(args: argparse.Namespace) -> None:
    from service.auth import mint_token

    print(
        mint_token(
            get_settings(),
            subject=args.subject,
            scopes=args.scope.split(),
            sponsor_ids=args.sponsor or [],
            ttl_seconds=args.ttl,
        )
    )


def _provider_check(args: argparse.Namespace) -> None:
    import asyncio

    from worker.providers.resend import ResendProvider
    from worker.providers.resend_check import check

    settings = get_settings()
    if settings.resend_api_key is None:
        sys.exit("campaignctl provider-check: set RESEND_API_KEY (and RESEND_API_URL to test)")
    key = settings.resend_api_key.get_secret_value()

    async def run() -> bool:
        provider = ResendProvider(key, settings.resend_api_url)
        try:
            report = await check(provider, args.sender, args.to)
        finally:
            await provider.aclose()
        print("\n".join(report.lines))
        return report.ok

    sys.exit(0 if asyncio.run(run()) else 1)


def _demo(args: argparse.Namespace) -> None:
    demo, devstack = _devtools("demo"), _devtools("devstack")
    try:
        code = demo.run_demo(Path(args.dir), serve=args.serve, port=args.port, leads=args.leads)
    except devstack.DevStackError as exc:
        sys.exit(f"campaignctl demo: {exc}")
    sys.exit(code)


def _import_leads(args: argparse.Namespace) -> None:
    import asyncio

    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from service.db import create_engine, session_factory
    from service.leads.csv_import import import_csv
    from service.sponsors import repository as sponsors

    path = Path(args.file)
    size = path.stat().st_size
    settings = get_settings()

    async def run() -> None:
        engine = create_engine(settings)
        try:
            with (
                open(args.file, "rb") as file,  # noqa: ASYNC230 - read in a thread by the parser
                Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    DownloadColumn(),
                    TimeRemainingColumn(),
                ) as progress,
            ):
                task = progress.add_task(f"importing {path.name}", total=size)
                async with session_factory(engine).begin() as session:
                    await sponsors.get(session, args.sponsor)
                    result = await import_csv(
                        session,
                        args.sponsor,
                        file,
                        progress=lambda done: progress.update(task, completed=done),
                    )
                progress.update(task, completed=size)
        finally:
            await engine.dispose()
        print(
            f"{result.rows} rows: {result.inserted} inserted, {result.updated} updated, "
            f"{result.rejected_count} rejected"
        )
        for row in result.rejected:
            print(f"  line {row.line}: {row.code}: {row.message}")

    from service.errors import ClientError

    try:
        asyncio.run(run())
    except ClientError as exc:
        sys.exit(f"import failed: {exc.code}: {exc.message}")


def _export_schemas(args: argparse.Namespace) -> None:
    import json

    from schemas.catalog import contracts

    target = Path(args.dir)
    target.mkdir(parents=True, exist_ok=True)
    for topic, schema in contracts().items():
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": topic,
            **schema,
        }
        (target / f"{topic}.json").write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {target / f'{topic}.json'}")


def build_parser() -> argparse.ArgumentParser:
    from worker.main import ROLES

    parser = argparse.ArgumentParser(prog="campaignctl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="API processes")
    api.set_defaults(func=_api)

    worker = commands.add_parser("worker", help="run the Kafka consumer roles")
    worker.add_argument("--role", choices=list(ROLES), default=None)
    worker.set_defaults(func=_worker)

    status = commands.add_parser("status", help="live view of running campaigns")
    status.add_argument("--once", action="store_true", help="print one snapshot and exit")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    status.set_defaults(func=_status)

    commands.add_parser("migrate", help="alembic upgrade head").set_defaults(func=_migrate)
    commands.add_parser("kafka-init", help="create the topics (idempotent)").set_defaults(
        func=_kafka_init
    )

    leads = commands.add_parser("import-leads", help="import a CSV file of leads")
    leads.add_argument("file", help="CSV with a header row; 'email' required")
    leads.add_argument("--sponsor", required=True, help="sponsor id")
    leads.set_defaults(func=_import_leads)

    schemas = commands.add_parser("export-schemas", help="write JSON Schema of the event contracts")
    schemas.add_argument("dir", help="target directory")
    schemas.set_defaults(func=_export_schemas)

    devstack = commands.add_parser("devstack", help="start local PostgreSQL + Kafka broker")
    devstack.add_argument("--dir", default="var/devstack")
    devstack.set_defaults(func=_devstack)

    token = commands.add_parser("token", help="mint a JWT for local use")
    token.add_argument("--sponsor", action="append", help="sponsor id (repeatable)")
    token.add_argument("--scope", default="campaigns:read campaigns:write leads:write stats:read")
    token.add_argument("--subject", default="local-user")
    token.add_argument("--ttl", type=int, default=3600, help="seconds")
    token.set_defaults(func=_token)

    check = commands.add_parser(
        "provider-check", help="send one message through Resend with a template; show the answers"
    )
    check.add_argument("--to", required=True, help="a test address whose mail you can read")
    # Resend's own test sender works before any domain is verified (to the account's address).
    check.add_argument("--from", dest="sender", default="onboarding@resend.dev")
    check.set_defaults(func=_provider_check)

    demo = commands.add_parser("demo", help="local stack + API + worker + a demo campaign")
    demo.add_argument("--dir", default="var/demo")
    demo.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--leads", type=int, default=300)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    from service.logs import configure

    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
