"""Messages polled together share a provider batch request, and each goes out once.

The message-sender's delivery is driven directly against the real database and
the fake Resend (which keeps Resend's idempotency: a replayed key and body send
nothing). Messages are written without their outbox rows, so the suite's
running workers never send them behind the test's back.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.messages import MessageIn, MessageRequested
from service import db
from service.messages import logic, sending_repository
from service.settings import Settings
from tests.conftest import RESEND_KEY, SPONSOR_MAILGUN_KEY, TokenFactory
from tests.fakes.mailgun_server import FakeMailgun
from tests.fakes.resend_server import FakeResend
from tests.messages.test_message_types import message_type
from tests.messages.test_messages import Api, alert
from tests.sending.test_sponsor_providers import mailgun, sponsor_on
from worker.delivery.messages import MessageDeliveries
from worker.providers import build_provider
from worker.providers.resend import ResendProvider
from worker.ratelimit import Pacer


@pytest.fixture
async def deliveries(
    migrated: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[MessageDeliveries]:
    settings = migrated.model_copy(update={"send_max_tries": 1})
    provider = build_provider(settings)
    yield MessageDeliveries(sessions, provider, Pacer(1000), settings)
    await provider.aclose()


@pytest.fixture
async def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    api = Api(client, sponsor, token)
    await api.add_type()
    return api


async def _queued(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    bodies: list[dict[str, Any]],
    sponsor: str | None = None,
) -> list[MessageRequested]:
    """Queued messages, as the API writes them but with no event published for them."""
    settings = Settings()
    sponsor = sponsor or api.sponsor
    async with sessions.begin() as session:
        ids = await logic.queue(
            session, settings, sponsor, [MessageIn.model_validate(b) for b in bodies], None
        )
        await session.execute(
            text("DELETE FROM outbox WHERE key = ANY(:keys)"), {"keys": [str(i) for i in ids]}
        )
    return [MessageRequested(message_id=i, sponsor_id=sponsor) for i in ids]


def _addresses(count: int) -> list[str]:
    return [f"{uuid.uuid4().hex[:8]}@customer.example" for _ in range(count)]


async def _rows(
    sessions: async_sessionmaker[AsyncSession], events: list[MessageRequested]
) -> dict[uuid.UUID, Any]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT id, status, provider_message_id, send_batch, last_error FROM messages"
                " WHERE id = ANY(:ids)"
            ),
            {"ids": [e.message_id for e in events]},
        )
    return {row.id: row for row in rows}


async def _sends(
    fake: FakeResend, sessions: async_sessionmaker[AsyncSession], events: list[MessageRequested]
) -> list[Any]:
    """The fake's send requests for these messages (the suite's workers send others):
    under their batch's key or their own id."""
    rows = await _rows(sessions, events)
    keys = {r.send_batch for r in rows.values() if r.send_batch} | {str(i) for i in rows}
    return [
        r
        for r in fake.requests
        if r.path.startswith("/emails")
        and r.method == "POST"
        and any((r.idempotency_key or "").startswith(key) for key in keys)
    ]


async def test_messages_polled_together_go_in_one_batch_request_each_recorded_sent(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    addresses = _addresses(3)
    events = await _queued(api, sessions, [alert(to) for to in addresses])
    await deliveries.send_many(events)

    (request,) = await _sends(fake, sessions, events)
    assert request.path == "/emails/batch"
    rows = await _rows(sessions, events)
    (key,) = {row.send_batch for row in rows.values()}
    assert request.idempotency_key == key
    for to in addresses:
        (sent,) = fake.messages_to(to)
        row = next(r for r in rows.values() if r.provider_message_id == sent.id)
        assert row.status == "sent"


async def test_a_batch_handled_twice_sends_each_message_once(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    addresses = _addresses(3)
    events = await _queued(api, sessions, [alert(to) for to in addresses])
    # Two copies at once (a rebalance), then a replay.
    await asyncio.gather(deliveries.send_many(events), deliveries.send_many(events))
    await deliveries.send_many(events)

    assert [len(fake.messages_to(to)) for to in addresses] == [1, 1, 1]
    assert {row.status for row in (await _rows(sessions, events)).values()} == {"sent"}


async def test_a_batch_claimed_before_a_crash_is_sent_whole_under_its_key(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    addresses = _addresses(3)
    events = await _queued(api, sessions, [alert(to) for to in addresses])
    async with db.driver(sessions) as driver:
        claimed = await sending_repository.claim_send_batches(
            driver, {e.message_id: "msgbatch-crashed" for e in events}
        )
    assert len(claimed) == 3
    # Only one of its events comes back first: the batch goes whole, as claimed.
    await deliveries.send_many(events[:1])

    (request,) = await _sends(fake, sessions, events)
    assert (request.path, request.idempotency_key) == ("/emails/batch", "msgbatch-crashed")
    assert [len(fake.messages_to(to)) for to in addresses] == [1, 1, 1]
    await deliveries.send_many(events[1:])
    assert len(await _sends(fake, sessions, events)) == 1


async def test_a_batch_sent_but_not_recorded_goes_again_under_its_key_and_sends_nothing(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    addresses = _addresses(2)
    events = await _queued(api, sessions, [alert(to) for to in addresses])
    await deliveries.send_many(events)
    first = await _rows(sessions, events)
    # The process died after the request, before its outcome was recorded.
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE messages SET status = 'queued', provider_message_id = NULL,"
                " sent_at = NULL WHERE id = ANY(:ids)"
            ),
            {"ids": [e.message_id for e in events]},
        )
    await deliveries.send_many(events)

    first_request, second_request = await _sends(fake, sessions, events)
    assert second_request.idempotency_key == first_request.idempotency_key
    assert second_request.replayed
    assert [len(fake.messages_to(to)) for to in addresses] == [1, 1]
    again = await _rows(sessions, events)
    assert {i: r.provider_message_id for i, r in again.items()} == {
        i: r.provider_message_id for i, r in first.items()
    }
    assert {r.status for r in again.values()} == {"sent"}


async def test_a_message_with_attachments_goes_alone_under_its_id(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    plain_to, attached_to = _addresses(2)
    attached = alert(attached_to)
    content = base64.b64encode(b"%PDF-1.4 invoice").decode()
    attached["attachments"] = [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "content": content}
    ]
    plain, with_file = await _queued(api, sessions, [alert(plain_to), attached])
    await deliveries.send_many([plain, with_file])

    by_path = {r.path: r for r in await _sends(fake, sessions, [plain, with_file])}
    assert set(by_path) == {"/emails", "/emails/batch"}
    assert (by_path["/emails"].idempotency_key or "").startswith(str(with_file.message_id))
    assert [a["filename"] for a in fake.messages_to(attached_to)[0].attachments] == ["invoice.pdf"]
    assert len(fake.messages_to(plain_to)) == 1
    rows = await _rows(sessions, [plain, with_file])
    assert rows[with_file.message_id].send_batch is None
    assert {r.status for r in rows.values()} == {"sent"}


async def _invalid_address(
    sessions: async_sessionmaker[AsyncSession], event: MessageRequested
) -> None:
    """An address the provider refuses (the API would not take it)."""
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE messages SET to_email = 'no-at-sign' WHERE id = :id"),
            {"id": event.message_id},
        )


async def test_a_member_the_provider_refuses_fails_alone_and_the_others_are_sent(
    api: Api,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
) -> None:
    addresses = _addresses(3)
    events = await _queued(api, sessions, [alert(to) for to in addresses])
    await _invalid_address(sessions, events[1])
    await deliveries.send_many(events)

    assert len(await _sends(fake, sessions, events)) == 1
    rows = await _rows(sessions, events)
    assert rows[events[1].message_id].status == "failed"
    assert "to" in rows[events[1].message_id].last_error
    assert [rows[e.message_id].status for e in (events[0], events[2])] == ["sent", "sent"]


async def test_a_batch_refused_whole_for_one_member_sends_each_alone_under_its_id(
    api: Api,
    migrated: Settings,
    sessions: async_sessionmaker[AsyncSession],
    fake: FakeResend,
) -> None:
    strict = ResendProvider(RESEND_KEY, fake.url, batch_validation="strict")
    deliveries = MessageDeliveries(sessions, strict, Pacer(1000), migrated)
    addresses = _addresses(3)
    events = await _queued(api, sessions, [alert(to) for to in addresses])
    await _invalid_address(sessions, events[1])
    try:
        await deliveries.send_many(events)
    finally:
        await strict.aclose()

    batch, *singles = await _sends(fake, sessions, events)
    assert (batch.path, batch.status) == ("/emails/batch", 422)
    assert sorted(r.idempotency_key for r in singles) == sorted(str(e.message_id) for e in events)
    rows = await _rows(sessions, events)
    assert [rows[e.message_id].status for e in events] == ["sent", "failed", "sent"]
    assert [len(fake.messages_to(addresses[i])) for i in (0, 2)] == [1, 1]


async def test_a_poll_batches_each_account_apart_and_a_provider_without_batches_sends_singly(
    api: Api,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
    deliveries: MessageDeliveries,
    fake: FakeResend,
    fake_mailgun: FakeMailgun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACME_MAILGUN_KEY", SPONSOR_MAILGUN_KEY)
    acme = await sponsor_on(client, admin, mailgun("ACME_MAILGUN_KEY"))
    created = await client.post(
        f"/api/v1/sponsors/{acme}/message-types", headers=token(acme), json=message_type()
    )
    assert created.status_code == 201, created.text
    ours_to, acme_to = _addresses(2), _addresses(2)
    ours = await _queued(api, sessions, [alert(to) for to in ours_to])
    theirs = await _queued(api, sessions, [alert(to) for to in acme_to], sponsor=acme)
    await deliveries.send_many(ours + theirs)

    (request,) = await _sends(fake, sessions, ours)
    assert request.path == "/emails/batch"
    assert [len(fake.messages_to(to)) for to in ours_to] == [1, 1]
    assert [len(fake_mailgun.messages_to(to)) for to in acme_to] == [1, 1]
    rows = await _rows(sessions, ours + theirs)
    assert {rows[e.message_id].send_batch for e in theirs} == {None}
    assert {r.status for r in rows.values()} == {"sent"}
