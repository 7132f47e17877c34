"""Tracking of transactional messages on the real stack: the pixel and the redirect
of a sent message, provider webhooks about it, its status and history, the stats of
its type and the CSV of messages."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.tracking import ProviderEvent, TrackingEvent
from service.app import create_app
from service.kafka import Producer
from service.messages import sending_repository
from service.settings import Settings
from tests.conftest import SPEC_DIR, TokenFactory, eventually
from tests.fakes import sendgrid_server as sendgrid
from tests.fakes.resend_server import FakeResend
from tests.messages.test_messages import Api
from tests.tracking import test_mailgun_webhooks as mailgun_hooks
from tests.tracking.test_mailgun_webhooks import keyed  # noqa: F401 (a fixture)
from tests.tracking.test_webhooks import example, post
from worker.ingester import Ingester

pytestmark = pytest.mark.usefixtures("workers")

SENDGRID_SPECS = SPEC_DIR / "sendgrid" / "webhooks"
BROWSER = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"}
TARGET = "https://shop.example/orders/42?ref=mail"
BODY = f'<p>{{{{ attributes.lead_name }}}}: <a href="{TARGET}">your order</a></p>'


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


@pytest.fixture
async def order_type(api: Api) -> dict[str, Any]:
    return await api.add_type(key="order.shipped", html_body=BODY)


def address() -> str:
    return f"{uuid.uuid4().hex[:8]}@customer.example"


async def send(api: Api, to: str, key: str = "order.shipped") -> str:
    response = await api.send({"type": key, "to": to, "data": {"lead_name": "Ada"}})
    assert response.status_code == 202, response.text
    message_id: str = response.json()["ids"][0]
    return message_id


async def sent(api: Api, fake: FakeResend, to: str) -> tuple[str, str, str, str]:
    """Send one message and wait for it: (id, provider id, pixel path, link path)."""
    message_id = await send(api, to)
    status = await api.settled(message_id)
    assert status["status"] == "sent", status
    (email,) = fake.messages_to(to)
    html = email.html or ""
    pixel = re.search(r"/o/[A-Za-z0-9_-]+", html)
    link = re.search(r"/c/[A-Za-z0-9_-]+", html)
    assert pixel and link, html
    assert TARGET not in html  # the link goes through our redirect
    return message_id, email.id, pixel.group(0), link.group(0)


async def back_date(sessions: async_sessionmaker[AsyncSession], message_id: str) -> None:
    """Send time a minute ago: a click right after sending is taken for a link scanner."""
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE messages SET sent_at = sent_at - interval '1 minute' WHERE id = :id"),
            {"id": message_id},
        )


async def reaches(api: Api, message_id: str, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await api.status(message_id)
        return found if found["status"] == status else None

    return await eventually(check)


async def test_a_messages_pixel_and_link_move_it_to_opened_then_clicked_with_its_history(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    message_id, provider_id, pixel, link = await sent(api, fake, address())
    await back_date(sessions, message_id)

    opened = await api.client.get(pixel, headers=BROWSER)
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    await reaches(api, message_id, "opened")
    clicked = await api.client.get(link, headers=BROWSER)
    assert clicked.status_code == 302
    assert clicked.headers["location"] == TARGET
    found = await reaches(api, message_id, "clicked")

    kinds = [entry["type"] for entry in found["history"]]
    assert kinds == ["queued", "sent", "opened", "clicked"]
    assert found["history"][1]["provider_message_id"] == provider_id
    assert found["history"][3]["url"] == TARGET
    assert not any(entry["machine"] for entry in found["history"])


async def test_opens_and_clicks_of_machines_are_history_but_move_nothing(
    api: Api, fake: FakeResend, order_type: dict[str, Any]
) -> None:
    message_id, _, pixel, link = await sent(api, fake, address())
    await api.client.head(pixel, headers=BROWSER)  # a link scanner's HEAD
    assert (await api.client.get(link, headers=BROWSER)).status_code == 302  # seconds after

    async def logged() -> dict[str, Any] | None:
        found = await api.status(message_id)
        return found if len(found["history"]) == 4 else None

    found = await eventually(logged)
    assert found["status"] == "sent"
    assert [e["machine"] for e in found["history"][2:]] == [True, True]


async def test_a_tampered_or_foreign_message_link_is_a_404_and_records_nothing(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    message_id, _, _, link = await sent(api, fake, address())
    token = link.removeprefix("/c/")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[5] ^= 1  # another message id, same signature
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in (forged, token[:-2], token + "AA"):
        response = await api.client.get(f"/c/{bad}", headers=BROWSER)
        assert response.status_code == 404, bad
        assert "location" not in response.headers
    async with sessions() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM message_events WHERE message_id = :id"), {"id": message_id}
        )
    assert count == 0


def tags(message_id: str) -> dict[str, str]:
    """The tags the sender gave the message, as the provider echoes them."""
    return {"campaign_id": f"message-{message_id}", "delivery_id": "0"}


def resend(name: str, message_id: str, email_id: str) -> bytes:
    """Resend's published example ``name`` about the message, happening now."""
    payload = json.loads(example(name, email_id=email_id, tags=tags(message_id)))
    payload["created_at"] = datetime.now(UTC).isoformat()
    return json.dumps(payload).encode()


async def test_resend_webhooks_move_a_message_to_delivered_and_a_hard_bounce_suppresses_it(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    to = address()
    delivered_id, delivered_email, _, _ = await sent(api, fake, to)
    body = resend("delivered", delivered_id, delivered_email)
    assert (await post(api.client, body)).status_code == 200
    await reaches(api, delivered_id, "delivered")

    bounced_to = address()
    bounced_id, bounced_email, _, _ = await sent(api, fake, bounced_to)
    body = resend("bounced", bounced_id, bounced_email)
    assert (await post(api.client, body)).status_code == 200
    found = await reaches(api, bounced_id, "bounced")
    assert found["history"][-1]["type"] == "bounced"
    async with sessions() as session:
        reason = await session.scalar(
            text("SELECT reason FROM suppressions WHERE sponsor_id = :s AND email = :e"),
            {"s": api.sponsor, "e": bounced_to},
        )
    assert reason == "hard_bounce"
    again = await send(api, bounced_to)
    assert (await api.settled(again))["status"] == "suppressed"


async def test_an_earlier_event_arriving_late_never_moves_a_message_back(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    message_id, email_id, _, link = await sent(api, fake, address())
    await back_date(sessions, message_id)
    assert (await api.client.get(link, headers=BROWSER)).status_code == 302
    await reaches(api, message_id, "clicked")
    body = resend("delivered", message_id, email_id)
    assert (await post(api.client, body)).status_code == 200

    async def delivered_logged() -> dict[str, Any] | None:
        found = await api.status(message_id)
        return found if "delivered" in [e["type"] for e in found["history"]] else None

    found = await eventually(delivered_logged)
    assert found["status"] == "clicked"


async def test_an_event_whose_email_id_is_another_messages_is_kept_unmatched(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    message_id, _, _, _ = await sent(api, fake, address())
    msg_id = f"msg_{uuid.uuid4().hex}"
    body = example("delivered", email_id="another-email", tags=tags(message_id))
    assert (await post(api.client, body, msg_id)).status_code == 200

    async def kept() -> str | None:
        async with sessions() as session:
            reason: str | None = await session.scalar(
                text("SELECT payload->>'unmatched' FROM delivery_events WHERE event_id = :id"),
                {"id": f"resend:{msg_id}"},
            )
        return reason

    assert await eventually(kept) == "unknown_delivery"
    assert (await api.status(message_id))["status"] == "sent"


@pytest.mark.usefixtures("keyed")
async def test_mailgun_webhooks_move_a_message_to_delivered_and_bounced(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    outcomes = {}
    for name, status in (("delivered", "delivered"), ("failed-permanent", "bounced")):
        to = address()
        message_id, email_id, _, _ = await sent(api, fake, to)
        payload = mailgun_hooks.example(name)
        data = payload["event-data"]
        data["id"] = uuid.uuid4().hex
        data["user-variables"] = tags(message_id)
        data["message"] = {"headers": {"message-id": email_id}}
        data["recipient"] = to
        data["timestamp"] = datetime.now(UTC).timestamp()
        response = await api.client.post(mailgun_hooks.URL, content=mailgun_hooks.signed(payload))
        assert response.status_code == 200, response.text
        outcomes[name] = (await reaches(api, message_id, status))["status"]
    assert outcomes == {"delivered": "delivered", "failed-permanent": "bounced"}


async def test_stats_per_type_count_what_was_sent_and_what_people_did(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
    token: TokenFactory,
) -> None:
    sent_ones = [await sent(api, fake, address()) for _ in range(3)]
    for message_id, email_id, _, _ in sent_ones:
        await back_date(sessions, message_id)
        body = resend("delivered", message_id, email_id)
        assert (await post(api.client, body)).status_code == 200
    (first, _, pixel, link), (second, _, other_pixel, _) = sent_ones[:2]
    await api.client.get(pixel, headers=BROWSER)
    await api.client.get(link, headers=BROWSER)
    await api.client.get(other_pixel, headers={"User-Agent": "GoogleImageProxy"})
    await reaches(api, first, "clicked")

    async def machine_open_logged() -> dict[str, Any] | None:
        found = await api.status(second)
        return found if found["history"][-1]["type"] == "opened" else None

    assert (await eventually(machine_open_logged))["status"] == "delivered"

    url = api.url(f"/message-types/{order_type['id']}/stats")
    response = await api.client.get(url, headers=api.headers)
    assert response.status_code == 200, response.text
    stats = response.json()
    figures = {k: stats[k] for k in ("sent", "delivered", "opened", "clicked", "bounced")}
    assert figures == {"sent": 3, "delivered": 3, "opened": 1, "clicked": 1, "bounced": 0}
    assert stats["open_rate"] == 33.33 and stats["delivery_rate"] == 100.0
    assert stats["links"] == [{"url": TARGET, "clicks": 1, "human_clicks": 1}]

    other = await api.client.get(url, headers=token("someone-else", scopes="stats:read"))
    assert other.status_code == 403
    no_scope = await api.client.get(url, headers=token(api.sponsor, scopes="campaigns:read"))
    assert no_scope.status_code == 403

    analysts = await api.client.get(
        "/api/v1/stats/message-types",
        params={"sponsor_id": api.sponsor},
        headers=token(api.sponsor, scopes="stats:read"),
    )
    assert analysts.status_code == 200, analysts.text
    (row,) = analysts.json()["items"]
    assert {k: row[k] for k in figures} == figures
    assert row["key"] == "order.shipped"


async def test_the_messages_csv_has_the_filtered_rows_with_cells_safe_for_spreadsheets(
    api: Api, fake: FakeResend, order_type: dict[str, Any]
) -> None:
    risky = f"-{uuid.uuid4().hex[:6]}@customer.example"  # a valid address a sheet reads as -x
    ids = [await send(api, risky), await send(api, address())]
    for message_id in ids:
        await api.settled(message_id)
    response = await api.client.get(
        api.url("/messages"), params={"format": "csv"}, headers=api.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["id"] for row in rows] == ids[::-1]
    assert rows[1]["to"] == "'" + risky
    assert {row["status"] for row in rows} == {"sent"}

    only = await api.client.get(
        api.url("/messages"), params={"format": "csv", "to": risky}, headers=api.headers
    )
    assert [row["id"] for row in csv.DictReader(io.StringIO(only.text))] == ids[:1]


async def test_since_and_until_bound_the_messages_listed_by_creation_time(
    api: Api, fake: FakeResend, order_type: dict[str, Any]
) -> None:
    before = datetime.now(UTC)
    message_id = await send(api, address())
    after = datetime.now(UTC) + timedelta(seconds=1)

    async def listed(**params: str) -> list[str]:
        response = await api.client.get(api.url("/messages"), params=params, headers=api.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await listed(since=before.isoformat()) == [message_id]
    assert await listed(until=before.isoformat()) == []
    assert await listed(since=after.isoformat()) == []
    assert await listed(since=before.isoformat(), until=after.isoformat()) == [message_id]


@pytest.fixture
async def ingester(sessions: async_sessionmaker[AsyncSession], migrated: Settings) -> Any:
    producer = Producer(migrated)
    yield Ingester(sessions, producer, migrated)
    producer.close()


async def test_a_batch_of_message_events_handled_twice_logs_and_moves_each_once(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    ingester: Ingester,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    message_id, _, _, _ = await sent(api, fake, address())
    later = datetime.now(UTC) + timedelta(minutes=5)
    events: list[TrackingEvent | ProviderEvent] = [
        TrackingEvent(
            type="open", event_id=uuid.uuid4().hex, message_id=uuid.UUID(message_id),
            occurred_at=later,
        ),
        TrackingEvent(
            type="click", event_id=uuid.uuid4().hex, message_id=uuid.UUID(message_id),
            occurred_at=later, position=0,
        ),
    ]  # fmt: skip
    first = await ingester.handle_events(events)
    again = await ingester.handle_events(events)
    assert (first.inserted, again.inserted) == (2, 0)
    found = await api.status(message_id)
    assert found["status"] == "clicked"
    assert [e["type"] for e in found["history"]] == ["queued", "sent", "opened", "clicked"]


async def test_an_event_that_overtakes_the_sender_decides_the_status_it_records(
    api: Api,
    order_type: dict[str, Any],
    ingester: Ingester,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
) -> None:
    message_id = uuid.uuid4()
    async with sessions.begin() as session:  # queued, not yet seen by the sender
        await session.execute(
            text(
                "INSERT INTO messages (id, sponsor_id, type_id, type_key, to_email) "
                "VALUES (:id, :sponsor, :type, 'order.shipped', 'ada@customer.example')"
            ),
            {"id": message_id, "sponsor": api.sponsor, "type": order_type["id"]},
        )
    delivered = ProviderEvent(
        type="delivered",
        event_id=f"resend:{uuid.uuid4().hex}",
        provider_type="email.delivered",
        email_id="em_1",
        tags=tags(str(message_id)),
        occurred_at=datetime.now(UTC),
    )
    await ingester.handle_events([delivered])
    assert (await api.status(str(message_id)))["status"] == "queued"
    async with sessions.begin() as session:
        outcome = sending_repository.Outcome(message_id, "sent", "em_1", links=[TARGET])
        assert await sending_repository.record_outcomes(session, [outcome]) == {message_id}
    found = await api.status(str(message_id))
    assert found["status"] == "delivered"
    assert found["provider_message_id"] == "em_1"


@pytest.fixture
async def sendgrid_client(migrated: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with a SendGrid webhook key (read when the app starts)."""
    settings = migrated.model_copy(update={"sendgrid_webhook_public_key": sendgrid.PUBLIC_KEY})
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_sendgrid_webhooks_move_a_message_to_delivered_and_a_complaint_suppresses_it(
    api: Api,
    fake: FakeResend,
    order_type: dict[str, Any],
    sendgrid_client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    to = address()
    message_id, _, _, _ = await sent(api, fake, to)
    for name, status in (("delivered", "delivered"), ("spamreport", "complained")):
        events = json.loads((SENDGRID_SPECS / f"{name}.json").read_text())
        for event in events:
            event.update(tags(message_id), email=to, sg_event_id=uuid.uuid4().hex)
        body = sendgrid.wire_body(events)
        response = await sendgrid_client.post(
            "/api/v1/webhooks/sendgrid", content=body, headers=sendgrid.sign(body)
        )
        assert response.status_code == 200, response.text
        await reaches(api, message_id, status)
    async with sessions() as session:
        reason = await session.scalar(
            text("SELECT reason FROM suppressions WHERE sponsor_id = :s AND email = :e"),
            {"s": api.sponsor, "e": to},
        )
    assert reason == "complaint"
