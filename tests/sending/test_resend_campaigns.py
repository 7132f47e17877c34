"""Campaigns through the Resend adapter on the real stack: the sender's name as
Resend wants it, account errors that pause, and when a round may use a template."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.settings import Settings
from tests import factories
from tests.conftest import TokenFactory
from tests.fakes.resend_server import MAX_TEMPLATE_VALUE, FakeResend
from tests.sending.test_sending import Api, _batched_emails, _templates_created
from worker.delivery.context import CampaignContexts
from worker.providers.resend import ResendProvider
from worker.ratelimit import Pacer

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


async def test_a_sender_name_with_accents_and_punctuation_goes_out_as_resend_documents(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE sponsors SET from_name = 'Café Müller, Inc.' WHERE id = :id"),
            {"id": api.sponsor},
        )
    await api.leads(5)
    created = await api.create()
    stats = await api.wait_status(created["id"], "sent")
    assert stats["sent"] == 5 and stats["failed"] == 0
    senders = {e["from"] for e in _batched_emails(fake, created["id"])}
    assert senders == {"Café Müller, Inc. <news@sponsor.example>"}


async def test_an_unverified_domain_pauses_the_campaign_with_its_rows_pending(
    api: Api, fake: FakeResend
) -> None:
    await api.leads(30)
    fake.set_verified_domains({"elsewhere.example"})
    created = await api.create()
    paused = await api.wait_status(created["id"], "paused")
    assert (paused["sent"], paused["failed"]) == (0, 0)
    reason = (await api.campaign(created["id"]))["status_reason"]
    assert reason.startswith("validation_error:") and "not verified" in reason

    fake.set_verified_domains(None)
    assert (await api.post(created["id"], "resume")).status_code == 202
    stats = await api.wait_status(created["id"], "sent")
    assert (stats["sent"], stats["failed"]) == (30, 0)


async def test_a_lead_value_over_resends_limit_makes_the_round_send_whole_bodies(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.leads(10, attributes={"bio": "short"})
    async with sessions.begin() as session:
        # Within the limit as text, over it once HTML-escaped ("&" -> "&amp;").
        await session.execute(
            text(
                "UPDATE leads SET attributes = jsonb_build_object('bio', repeat('&', :n)) "
                "WHERE sponsor_id = :s AND email = :e"
            ),
            {"n": MAX_TEMPLATE_VALUE // 5 + 1, "s": api.sponsor, "e": f"lead1@{api.domain}"},
        )
    created = await api.create(message_body="Hi {{ name }}, {{ attributes.bio }}")
    stats = await api.wait_status(created["id"], "sent")
    assert (stats["sent"], stats["failed"]) == (10, 0)
    emails = _batched_emails(fake, created["id"])
    assert len(emails) == 10 and all("html" in e and "template" not in e for e in emails)
    assert _templates_created(fake, created["id"]) == 0


async def test_values_within_the_limit_still_use_a_template(api: Api, fake: FakeResend) -> None:
    await api.leads(10, attributes={"bio": "x" * MAX_TEMPLATE_VALUE})
    created = await api.create(message_body="Hi {{ name | default('you') }}, {{ attributes.bio }}")
    stats = await api.wait_status(created["id"], "sent")
    assert (stats["sent"], stats["failed"]) == (10, 0)
    emails = _batched_emails(fake, created["id"])
    assert all("template" in e for e in emails)
    assert _templates_created(fake, created["id"]) == 1


async def test_a_block_in_the_body_makes_the_round_send_whole_bodies(
    api: Api, fake: FakeResend
) -> None:
    await api.leads(10)
    body = "{% if name %}Hi {{ name }},{% else %}Hello,{% endif %}\n\nnews."
    created = await api.create(message_body=body)
    await api.wait_status(created["id"], "sent")
    emails = _batched_emails(fake, created["id"])
    assert len(emails) == 10 and all("html" in e and "template" not in e for e in emails)
    assert _templates_created(fake, created["id"]) == 0


async def _sending_campaign(sessions: async_sessionmaker[AsyncSession], sponsor: str) -> uuid.UUID:
    made = await factories.sent_campaign(sessions, sponsor, 1, status="sending")
    return made.id


async def test_a_sending_only_key_sends_whole_bodies_and_asks_for_templates_once(
    fake: FakeResend,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    migrated: Settings,
) -> None:
    fake.set_restricted_key(True)
    assert migrated.resend_api_key is not None
    provider = ResendProvider(migrated.resend_api_key.get_secret_value(), fake.url, timeout=5.0)
    contexts = CampaignContexts(sessions, provider, Pacer(1000), migrated)
    decided: list[Any] = []
    try:
        for _ in range(2):
            context = await contexts.get(await _sending_campaign(sessions, sponsor))
            assert context is not None
            decided.append(context.template_id)
    finally:
        await provider.aclose()
    assert decided == [None, None]
    # Creations only: the session's relay may delete another test's template meanwhile.
    created = [r for r in fake.requests if r.method == "POST" and r.path == "/templates"]
    assert [r.status for r in created] == [401]
