"""The reschedule and cancel links of appointment emails, and the page behind them.

The page is read over HTTP as a browser without JavaScript would: a GET shows a
form, its POST asks. What it publishes is read back from ``appointment-requests.v1``
on the real broker; the whole way from ``appointments.v1`` to the link in the
email the fake Resend received runs on the session's workers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.appointment_requests import AppointmentRescheduleRequested, appointment_requests
from schemas.appointments import AppointmentBooked, AppointmentCancelled
from schemas.catalog import contracts
from schemas.events import TOPIC_APPOINTMENT_REQUESTS, TOPIC_APPOINTMENTS
from service.appointments import logic
from service.appointments.links import Action, Links
from service.appointments.outgoing import Config
from service.kafka import make_consumer
from service.models import Message
from service.settings import Settings
from service.tracking.tokens import TokenSigner
from tests.conftest import create_sponsor, eventually
from tests.dead_letters import produce
from tests.fakes.resend_server import FakeResend
from tests.messages.test_appointments import event

_LINK = re.compile(r'href="([^"]*/a/[A-Za-z0-9_-]+)"')


@pytest.fixture(scope="module")
def config(migrated: Settings) -> Config:
    """Signed like the app signs: the links it makes open the app's pages."""
    return Config.from_settings(migrated)


async def book(
    sessions: async_sessionmaker[AsyncSession],
    config: Config,
    sponsor: str,
    appointment_id: str,
    start: datetime | None = None,
    now: datetime | None = None,
) -> None:
    start = start or datetime.now(UTC) + timedelta(days=3)
    async with sessions.begin() as session:
        item = event(AppointmentBooked, sponsor, appointment_id, start=start)
        await logic.handle(session, item, config, now=now)


async def links_of(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, appointment_id: str
) -> dict[str, str]:
    """The links in the appointment's latest email, as paths the test client can open."""
    async with sessions() as session:
        message = await session.scalar(
            select(Message)
            .where(
                Message.sponsor_id == sponsor,
                Message.tags["appointment_id"].astext == appointment_id,
            )
            .order_by(Message.created_at.desc())
            .limit(1)
        )
    assert message is not None
    return {
        name: "/a/" + message.data[f"{name}_url"].rsplit("/a/", 1)[1]
        for name in ("reschedule", "cancel")
        if f"{name}_url" in message.data
    }


def _requests_keyed(settings: Settings, key: str, until: str, within: float) -> list[Any]:
    """Every request with ``key`` up to the first from sponsor ``until`` (same key, same
    partition: what came before it in the partition is all there)."""
    consumer = make_consumer(settings, f"test-appointment-requests-{uuid.uuid4().hex}")
    consumer.subscribe([settings.topic(TOPIC_APPOINTMENT_REQUESTS)])
    found: list[Any] = []
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None and message.key() == key.encode():
                    request = appointment_requests.validate_json(message.value() or b"")
                    found.append(request)
                    if request.sponsor_id == until:
                        return found
    finally:
        consumer.close()
    raise AssertionError(f"no request from {until} within {within}s (saw {found})")


async def requests_keyed(settings: Settings, key: str, until: str) -> list[Any]:
    return await asyncio.to_thread(_requests_keyed, settings, key, until, 30.0)


async def assert_nothing_published(
    sessions: async_sessionmaker[AsyncSession],
    config: Config,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    settings: Settings,
    appointment_id: str,
) -> None:
    """No request about ``appointment_id`` so far: another sponsor's appointment of the
    same id asks next; its request lands in the same partition, after any earlier one."""
    other = await create_sponsor(client, admin)
    await book(sessions, config, other, appointment_id)
    await client.post((await links_of(sessions, other, appointment_id))["reschedule"])
    requests = await requests_keyed(settings, appointment_id, until=other)
    assert [r.sponsor_id for r in requests] == [other]


async def test_the_confirmation_links_open_a_form_that_works_without_script(
    sessions: async_sessionmaker[AsyncSession],
    config: Config,
    client: httpx.AsyncClient,
    sponsor: str,
) -> None:
    await book(sessions, config, sponsor, "page-1")
    links = await links_of(sessions, sponsor, "page-1")
    for path, button in (
        (links["reschedule"], "Ask to reschedule"),
        (links["cancel"], "Ask to cancel"),
    ):
        page = await client.get(path)
        assert page.status_code == 200
        assert "Product demo" in page.text
        assert f'<form method="post" action="{path}">' in page.text
        assert '<label for="note">' in page.text and 'id="note" name="note"' in page.text
        assert f'<button type="submit">{button}</button>' in page.text
        assert "<script" not in page.text


async def test_confirming_the_cancel_page_publishes_one_cancel_request_with_the_appointment_id(
    sessions: async_sessionmaker[AsyncSession],
    config: Config,
    client: httpx.AsyncClient,
    sponsor: str,
    migrated: Settings,
) -> None:
    appointment_id = f"apt-{uuid.uuid4().hex[:8]}"
    await book(sessions, config, sponsor, appointment_id)
    path = (await links_of(sessions, sponsor, appointment_id))["cancel"]

    answer = await client.post(path, data={"note": "  Something came up.  "})

    assert answer.status_code == 200
    assert "Request sent" in answer.text
    (request,) = await requests_keyed(migrated, appointment_id, until=sponsor)
    assert request.type == "appointment.cancel_requested"
    assert (request.appointment_id, request.sponsor_id) == (appointment_id, sponsor)
    assert request.note == "Something came up."
    assert request.sequence == 0
    assert request.lead_email == "ada@customer.example"


async def test_a_link_to_a_cancelled_appointment_says_so_and_publishes_nothing(
    sessions: async_sessionmaker[AsyncSession],
    config: Config,
    client: httpx.AsyncClient,
    sponsor: str,
    admin: dict[str, str],
    migrated: Settings,
) -> None:
    appointment_id = f"apt-{uuid.uuid4().hex[:8]}"
    await book(sessions, config, sponsor, appointment_id)
    path = (await links_of(sessions, sponsor, appointment_id))["reschedule"]
    async with sessions.begin() as session:
        cancelled = event(AppointmentCancelled, sponsor, appointment_id)
        await logic.handle(session, cancelled, config)

    page = await client.get(path)
    assert "This appointment is cancelled." in page.text
    assert "<form" not in page.text
    answer = await client.post(path, data={"note": "later?"})
    assert "This appointment is cancelled." in answer.text

    await assert_nothing_published(sessions, config, client, admin, migrated, appointment_id)


async def test_a_link_to_a_past_appointment_says_so_and_publishes_nothing(
    sessions: async_sessionmaker[AsyncSession],
    config: Config,
    client: httpx.AsyncClient,
    sponsor: str,
    admin: dict[str, str],
    migrated: Settings,
) -> None:
    appointment_id = f"apt-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(minutes=30)
    await book(sessions, config, sponsor, appointment_id, start, now=start - timedelta(days=1))
    path = (await links_of(sessions, sponsor, appointment_id))["cancel"]

    page = await client.get(path)
    answer = await client.post(path)

    assert "already started or taken place" in page.text and "<form" not in page.text
    assert "already started or taken place" in answer.text
    await assert_nothing_published(sessions, config, client, admin, migrated, appointment_id)


async def test_a_tampered_or_foreign_token_is_refused(
    sessions: async_sessionmaker[AsyncSession],
    config: Config,
    client: httpx.AsyncClient,
    sponsor: str,
) -> None:
    await book(sessions, config, sponsor, "page-2")
    path = (await links_of(sessions, sponsor, "page-2"))["cancel"]
    token = path.rsplit("/", 1)[1]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    forged = Links(TokenSigner(b"another-secret-0123456789"), "x")
    foreign = forged.url(Action.CANCEL, sponsor, "page-2").rsplit("/", 1)[1]

    for bad in (flipped, foreign, "not-a-token", token + "AAAA"):
        assert (await client.get(f"/a/{bad}")).status_code == 404
        assert (await client.post(f"/a/{bad}")).status_code == 404


def test_the_request_contract_is_in_the_exported_catalogue() -> None:
    schema = contracts()[TOPIC_APPOINTMENT_REQUESTS]
    jsonschema.Draft202012Validator.check_schema(schema)
    request = AppointmentRescheduleRequested(
        request_id=uuid.uuid4(),
        appointment_id="apt-1",
        sponsor_id="acme",
        sequence=2,
        lead_email="ada@customer.example",
        requested_at=datetime.now(UTC),
    )
    jsonschema.validate(json.loads(request.to_bytes()), schema)
    assert appointment_requests.validate_json(request.to_bytes()) == request


async def test_the_cancellation_email_carries_no_links(
    sessions: async_sessionmaker[AsyncSession], config: Config, sponsor: str
) -> None:
    await book(sessions, config, sponsor, "page-3")
    async with sessions.begin() as session:
        await logic.handle(session, event(AppointmentCancelled, sponsor, "page-3"), config)
    assert await links_of(sessions, sponsor, "page-3") == {}


@pytest.mark.usefixtures("workers")
async def test_the_link_in_the_email_the_lead_receives_opens_the_page(
    sponsor: str, fake: FakeResend, migrated: Settings, client: httpx.AsyncClient
) -> None:
    lead = f"{uuid.uuid4().hex[:8]}@customer.example"
    start = datetime.now(UTC) + timedelta(days=2)
    booked = event(AppointmentBooked, sponsor, "e2e-link", start=start, lead={"email": lead})
    await produce(migrated, TOPIC_APPOINTMENTS, "e2e-link", booked.to_bytes())

    (confirmation,) = await eventually(lambda: _async(fake.messages_to(lead)))
    urls = _LINK.findall(confirmation.html or "")
    assert len(urls) == 2
    assert all(url.startswith(migrated.public_base_url) for url in urls)
    pages = [await client.get(url.removeprefix(migrated.public_base_url)) for url in urls]
    assert [page.status_code for page in pages] == [200, 200]
    assert "Reschedule your appointment" in pages[0].text
    assert "Cancel your appointment" in pages[1].text


async def _async(value: Any) -> Any:
    return value
