"""The test session's real stack: PostgreSQL, the Kafka broker, the API and workers.

Started once per session: embedded PostgreSQL (durability off: it is a throwaway
database), the Tansu broker, a fake Resend that follows ``tests/specs``. Tests
isolate themselves by using fresh sponsor ids; topics carry a per-session prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from devtools.devstack import DevStack
from service.app import create_app
from service.auth import mint_token
from service.cli import migrate
from service.db import create_engine, session_factory
from service.kafka import create_topics
from service.models import CampaignDelivery
from service.settings import Settings
from tests import factories
from tests.fakes.mailgun_server import FakeMailgun
from tests.fakes.resend_server import FakeResend
from worker.main import ROLES, run_worker

RESEND_KEY = "re_test_key"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPONSOR_MAILGUN_KEY = "key-sponsor-own-0123456789"
T = TypeVar("T")


class TokenFactory(Protocol):
    """``token(sponsor, …, scopes=…)`` → an Authorization header."""

    def __call__(self, *sponsor_ids: str, scopes: str = ...) -> dict[str, str]: ...


class SponsorApi:
    """One sponsor's API, for one test: its client, its headers, its URLs.

    Test modules subclass it with the calls of their own area."""

    def __init__(self, client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> None:
        self.client = client
        self.sponsor = sponsor
        self.headers = token(sponsor)

    def url(self, path: str = "") -> str:
        return f"/api/v1/sponsors/{self.sponsor}{path}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    devstack = DevStack(tmp_path_factory.mktemp("stack"), fast=True)
    devstack.start()
    yield devstack
    devstack.stop()


@pytest.fixture(scope="session")
def fake_resend() -> Iterator[FakeResend]:
    fake = FakeResend(api_key=RESEND_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_mailgun() -> Iterator[FakeMailgun]:
    """Where a sponsor's own Mailgun account sends (``MAILGUN_API_URL`` of the session)."""
    fake = FakeMailgun(SPONSOR_MAILGUN_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_resend: FakeResend) -> Iterator[FakeResend]:
    """The session's fake Resend, back to normal behaviour after the test."""
    yield fake_resend
    fake_resend.set_latency(0)
    fake_resend.set_hang(False)
    fake_resend.set_rate_limit(None)
    fake_resend.reset()


@pytest.fixture(scope="session")
def settings(
    stack: DevStack,
    fake_resend: FakeResend,
    fake_mailgun: FakeMailgun,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    return Settings(
        database_url=stack.postgres.url,
        kafka_bootstrap_servers=stack.broker.bootstrap_servers,
        kafka_topic_prefix=f"test-{uuid.uuid4().hex[:8]}-",
        kafka_session_timeout_ms=6000,
        email_provider="resend",
        resend_api_key=RESEND_KEY,
        resend_api_url=fake_resend.url,
        # Only sponsors that name their own Mailgun account send there.
        mailgun_api_url=fake_mailgun.url,
        provider_rate_per_second=1000,
        outbox_dir=str(tmp_path_factory.mktemp("outbox")),
        auth_jwt_secret="test-secret-for-the-suite-0123456789",
        tracking_secret="tracking-secret-for-the-suite-0123",
        tracking_spool_dir=str(tmp_path_factory.mktemp("tracking-spool")),
        resend_webhook_secret=WEBHOOK_SECRET,
        ip_hash_secret="ip-hash-secret-for-the-suite",
        relay_interval_seconds=0.2,
        send_max_tries=2,
        send_retry_topic_attempts=2,
        send_retry_base_seconds=0.2,
        reconcile_interval_seconds=1.0,
        reconcile_stall_seconds=5.0,
        # Deleted at the first reconcile after the campaign ends; grace is tested on its own.
        resend_template_grace_seconds=0.0,
        # tests/operations/test_limits.py turns them on for its own apps.
        api_rate_limits_enabled=False,
        # Small test audiences are always counted exactly, however busy the machine.
        audience_preview_exact_ms=10_000,
    )


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> Settings:
    await asyncio.to_thread(migrate, settings)
    await asyncio.to_thread(create_topics, settings)
    return settings


@pytest.fixture(scope="session")
async def engine(migrated: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture(scope="session")
async def app(migrated: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(migrated)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def workers(migrated: Settings) -> AsyncIterator[None]:
    """Every worker role, running in the test loop against the real broker."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(migrated, ROLES, stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def token(migrated: Settings):  # type: ignore[no-untyped-def]
    """``token(sponsor, scopes)`` → an Authorization header."""

    def make(
        *sponsor_ids: str, scopes: str = "campaigns:read campaigns:write leads:write stats:read"
    ) -> dict[str, str]:
        jwt = mint_token(
            migrated, subject="test", scopes=scopes.split(), sponsor_ids=list(sponsor_ids)
        )
        return {"Authorization": f"Bearer {jwt}"}

    return make


@pytest.fixture
def admin(migrated: Settings) -> dict[str, str]:
    jwt = mint_token(migrated, subject="test-admin", scopes=["admin"], sponsor_ids=[])
    return {"Authorization": f"Bearer {jwt}"}


async def create_sponsor(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """A new sponsor with a fresh id, created through the API."""
    sponsor_id = f"sp-{uuid.uuid4().hex[:10]}"
    response = await client.put(
        f"/api/v1/sponsors/{sponsor_id}",
        headers=admin,
        json={
            "name": "Test Sponsor",
            "from_email": "news@sponsor.example",
            "from_name": "Test Sponsor",
            "postal_address": "1 Test Street, Berlin",
        },
    )
    assert response.status_code == 201, response.text
    return sponsor_id


@pytest.fixture
async def sponsor(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """A fresh sponsor, so each test sees only its own data."""
    return await create_sponsor(client, admin)


@contextlib.contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn on a free port (its own thread and event loop)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def eventually(
    check: Callable[[], Awaitable[T | None]], within: float = 30.0, interval: float = 0.1
) -> T:
    """Await ``check()`` until it returns a truthy value; fail after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(interval)


SPEC_DIR = Path(__file__).parent / "specs"


# -- a campaign over a stack of its own ------------------------------------------------------


@contextlib.contextmanager
def own_stack(root: Path, name: str, **provider_settings: Any) -> Iterator[Settings]:
    """A migrated stack apart from the session's, so its Resend workers never see these
    batches; ``provider_settings`` pick the provider and its knobs."""
    stack = DevStack(root / "stack", fast=True)
    stack.start()
    try:
        settings = Settings(
            database_url=stack.postgres.url,
            kafka_bootstrap_servers=stack.broker.bootstrap_servers,
            kafka_topic_prefix=f"{name}-{uuid.uuid4().hex[:6]}-",
            kafka_session_timeout_ms=6000,
            public_base_url="https://campaigns.example.com",
            provider_rate_per_second=1000,
            outbox_dir=str(root / "outbox"),
            auth_jwt_secret="own-stack-test-secret-0123456789abcdef",
            tracking_secret="own-stack-tracking-secret-0123456789ab",
            relay_interval_seconds=0.2,
            api_rate_limits_enabled=False,
            **provider_settings,
        )
        migrate(settings)
        create_topics(settings)
        yield settings
    finally:
        stack.stop()


async def run_campaign(
    settings: Settings, recipients: int, body: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """A campaign to ``recipients`` new leads through API → planner → sender → provider, on
    a worker of its own; its stats once sent, and its id."""
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, ROLES, stop))
    app = create_app(settings)
    admin = mint_token(settings, subject="t", scopes=["admin"], sponsor_ids=[])
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            sponsor = await create_sponsor(client, {"Authorization": f"Bearer {admin}"})
            scopes = ["campaigns:read", "campaigns:write", "leads:write", "stats:read"]
            jwt = mint_token(settings, subject="t", scopes=scopes, sponsor_ids=[sponsor])
            headers = {"Authorization": f"Bearer {jwt}"}
            leads = factories.leads(recipients, domain=f"{sponsor}.example")
            await factories.add_leads(client, sponsor, headers, leads)
            response = await client.post(
                f"/api/v1/sponsors/{sponsor}/campaigns",
                headers=headers,
                json=body or factories.campaign(),
            )
            assert response.status_code == 202, response.text
            campaign_id = str(response.json()["id"])
            url = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign_id}/stats"

            async def sent() -> dict[str, Any] | None:
                stats: dict[str, Any] = (await client.get(url, headers=headers)).json()
                return stats if stats["status"] == "sent" else None

            return await eventually(sent, within=90), campaign_id
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)


async def provider_ids(settings: Settings, campaign_id: str) -> dict[str, str | None]:
    """Each recipient's provider message id, as the sender recorded it."""
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            rows = await session.execute(
                select(
                    CampaignDelivery.recipient_email, CampaignDelivery.provider_message_id
                ).where(CampaignDelivery.campaign_id == uuid.UUID(campaign_id))
            )
            return {email: message_id for email, message_id in rows.all()}
    finally:
        await engine.dispose()
