"""The lifetime of a campaign's provider template: recorded before the provider
has it, kept for ``RESEND_TEMPLATE_GRACE_SECONDS`` after the campaign ends,
then deleted through the pacer, a failed delete tried again."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.kafka import Producer
from service.settings import Settings
from tests.conftest import TokenFactory, eventually
from tests.fakes.resend_server import FakeResend
from tests.sending.test_sending import Api, _batched_emails, _templates_created
from worker.providers.resend import ResendProvider
from worker.ratelimit import Pacer
from worker.relay import Relay

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


async def _rows(
    sessions: async_sessionmaker[AsyncSession], campaign_id: str
) -> list[tuple[str | None, str]]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT template_id, state FROM provider_templates WHERE campaign_id = :c"),
            {"c": campaign_id},
        )
        return [(row[0], row[1]) for row in rows]


async def test_a_template_stays_for_the_grace_period_then_a_failed_delete_is_retried(
    api: Api,
    fake: FakeResend,
    migrated: Settings,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrated, "resend_template_grace_seconds", 3600.0)
    await api.leads(20)
    created = await api.create()
    await api.wait_status(created["id"], "sent")
    assert _templates_created(fake, created["id"]) == 1
    (template_id,) = {e["template"]["id"] for e in _batched_emails(fake, created["id"])}

    async def finished() -> bool:
        return await _rows(sessions, created["id"]) == [(template_id, "finished")]

    await eventually(finished)
    # Emails Resend accepted may still be queued there: the template stays.
    assert template_id in fake.templates

    fake.fail_next(1, status=500, path=f"/templates/{template_id}")
    monkeypatch.setattr(migrated, "resend_template_grace_seconds", 0.0)

    async def deleted() -> bool:
        return template_id not in fake.templates and not await _rows(sessions, created["id"])

    await eventually(deleted)
    deletes = [r.status for r in fake.requests if r.method == "DELETE" and template_id in r.path]
    assert deletes == [500, 200]


async def test_a_template_whose_publish_failed_is_recorded_and_deleted_not_leaked(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake.fail_next(1, status=500, path="/templates/")  # the publish, after the create
    await api.leads(10)
    created = await api.create()
    stats = await api.wait_status(created["id"], "sent")
    assert stats["sent"] == 10
    emails = _batched_emails(fake, created["id"])
    assert all("html" in e and "template" not in e for e in emails)
    name = f"campaign {created['id']}"
    assert any(r.path == "/templates" and r.status == 200 for r in fake.requests)

    async def none_left() -> bool:
        return all(t.name != name for t in fake.templates.values()) and not await _rows(
            sessions, created["id"]
        )

    await eventually(none_left)


class CountingPacer(Pacer):
    def __init__(self) -> None:
        super().__init__(1000)
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1
        await super().acquire()


async def test_template_deletes_go_through_the_pacer(
    api: Api,
    fake: FakeResend,
    migrated: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrated, "resend_template_grace_seconds", 3600.0)  # the workers' relay
    await api.leads(10)
    created = await api.create()
    await api.wait_status(created["id"], "sent")
    await eventually(lambda: _finished(sessions, created["id"]))

    assert migrated.resend_api_key is not None
    provider = ResendProvider(migrated.resend_api_key.get_secret_value(), fake.url, timeout=5.0)
    pacer = CountingPacer()
    producer = Producer(migrated)
    settings = migrated.model_copy(update={"resend_template_grace_seconds": 0.0})
    relay = Relay(engine, sessions, producer, settings, templates=provider, pacer=pacer)
    try:
        deleted = await relay.remove_finished_templates()
    finally:
        await provider.aclose()
        producer.close()
    assert deleted >= 1 and pacer.acquired >= 1
    assert not await _rows(sessions, created["id"])


async def _finished(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> bool:
    return [state for _, state in await _rows(sessions, campaign_id)] == ["finished"]


async def test_a_template_refused_outright_leaves_no_row_to_clean_up(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake.fail_next(1, status=422, path="/templates")
    await api.leads(5)
    created = await api.create()
    await api.wait_status(created["id"], "sent")
    assert _templates_created(fake, created["id"]) == 0
    assert await _rows(sessions, created["id"]) == []
