"""Transactional messages on the real stack: the API queues them durably, the
``message-sender`` role sends each once through the fake Resend and records the outcome."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import TOPIC_MESSAGES
from schemas.messages import MessageRequested
from service.kafka import Producer
from service.messages import repository
from service.settings import Settings
from tests.conftest import SponsorApi, TokenFactory, eventually
from tests.fakes.resend_server import FakeResend
from tests.messages.test_message_types import message_type

pytestmark = pytest.mark.usefixtures("workers")


class Api(SponsorApi):
    """One sponsor's messages API, for one test."""

    async def add_type(self, **overrides: Any) -> dict[str, Any]:
        response = await self.client.post(
            self.url("/message-types"), headers=self.headers, json=message_type(**overrides)
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def send(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.client.post(self.url("/messages"), headers=headers, json=body)

    async def status(self, message_id: str) -> dict[str, Any]:
        response = await self.client.get(self.url(f"/messages/{message_id}"), headers=self.headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def settled(self, message_id: str) -> dict[str, Any]:
        """The message's status once it has left ``queued``."""

        async def done() -> dict[str, Any] | None:
            status = await self.status(message_id)
            return status if status["status"] != "queued" else None

        return await eventually(done)


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


def alert(to: str, **data: Any) -> dict[str, Any]:
    return {"type": "lead.qualified.alert", "to": to, "data": {"lead_name": "Ada", **data}}


async def test_a_message_sent_through_the_api_is_rendered_sent_and_recorded(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type()
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    pdf = base64.b64encode(b"%PDF-1.4 invoice").decode()
    body = alert(to, score=87)
    body["attachments"] = [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "content": pdf}
    ]
    response = await api.send(body)
    assert response.status_code == 202, response.text
    (message_id,) = response.json()["ids"]

    status = await api.settled(message_id)
    assert status["status"] == "sent", status
    assert status["sent_at"] is not None
    (sent,) = fake.messages_to(to)
    assert status["provider_message_id"] == sent.id
    assert sent.subject == "New lead: Ada"
    assert "Ada scored 87." in (sent.html or "")
    assert (sent.idempotency_key or "").startswith(message_id)
    assert [a["filename"] for a in sent.attachments] == ["invoice.pdf"]


async def test_a_message_without_to_goes_to_each_default_recipient(
    api: Api, fake: FakeResend
) -> None:
    first, second = (f"{uuid.uuid4().hex[:8]}@sales.example" for _ in range(2))
    await api.add_type(default_recipients=[first, second])
    response = await api.send({"type": "lead.qualified.alert", "data": {"lead_name": "Ada"}})
    assert response.status_code == 202, response.text
    ids = response.json()["ids"]
    assert len(ids) == 2
    for message_id in ids:
        assert (await api.settled(message_id))["status"] == "sent"
    assert len(fake.messages_to(first)) == len(fake.messages_to(second)) == 1


async def test_an_idempotency_key_replayed_returns_the_same_ids_and_sends_once(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type()
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    body = {"messages": [alert(to, score=1)]}
    first = await api.send(body, key="order-42")
    again = await api.send(body, key="order-42")
    assert first.status_code == again.status_code == 202, again.text
    assert first.json()["ids"] == again.json()["ids"]
    assert (await api.settled(first.json()["ids"][0]))["status"] == "sent"
    third = await api.send(body, key="order-42")
    assert third.json()["ids"] == first.json()["ids"]
    await asyncio.sleep(1)
    assert len(fake.messages_to(to)) == 1


async def test_an_idempotency_key_reused_with_another_body_is_a_409(api: Api) -> None:
    await api.add_type()
    assert (await api.send(alert("a@customer.example"), key="k-1")).status_code == 202
    reused = await api.send(alert("b@customer.example"), key="k-1")
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


async def test_an_idempotency_key_past_its_24_hours_is_free_for_another_body(
    api: Api, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.add_type()
    first = await api.send(alert("a@customer.example"), key="k-day")
    assert first.status_code == 202, first.text
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE message_idempotency_keys SET created_at = now() - interval '25 hours' "
                "WHERE sponsor_id = :s AND key = 'k-day'"
            ),
            {"s": api.sponsor},
        )
    later = await api.send(alert("b@customer.example"), key="k-day")
    assert later.status_code == 202, later.text
    assert later.json()["ids"] != first.json()["ids"]


async def test_missing_and_unknown_variables_are_a_422_naming_each(api: Api) -> None:
    await api.add_type()
    body = {
        "messages": [
            alert("a@customer.example"),
            {"type": "lead.qualified.alert", "to": "b@customer.example", "data": {"phone": "1"}},
        ]
    }
    response = await api.send(body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_message_data"
    assert error["field"] == "messages.1.data.lead_name"
    assert "'lead_name' is required" in error["message"]
    assert "'phone' is not a variable" in error["message"]
    assert [d["field"] for d in error["details"]] == [
        "messages.1.data.lead_name",
        "messages.1.data.phone",
    ]


async def test_a_variable_of_the_wrong_type_and_an_unknown_type_are_refused(api: Api) -> None:
    await api.add_type()
    wrong = await api.send(alert("a@customer.example", score="high"))
    assert wrong.status_code == 422
    assert wrong.json()["error"]["field"] == "messages.0.data.score"
    unknown = await api.send({"type": "no.such.type", "to": "a@customer.example"})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_message_type"


async def test_a_message_published_twice_on_its_topic_is_sent_once(
    api: Api,
    fake: FakeResend,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
) -> None:
    created = await api.add_type()
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    message_id = uuid.uuid4()
    async with sessions.begin() as session:  # queued, but not through the outbox
        await repository.add_messages(
            session,
            [
                {
                    "id": message_id,
                    "sponsor_id": api.sponsor,
                    "type_id": uuid.UUID(created["id"]),
                    "type_key": created["key"],
                    "to_email": to,
                    "data": {"lead_name": "Ada"},
                }
            ],
        )
    event = MessageRequested(message_id=message_id, sponsor_id=api.sponsor).to_bytes()
    producer = Producer(migrated)
    try:
        await producer.send([(TOPIC_MESSAGES, str(message_id), event)] * 2)
        assert (await api.settled(str(message_id)))["status"] == "sent"
        await producer.send([(TOPIC_MESSAGES, str(message_id), event)])
    finally:
        producer.close()
    await asyncio.sleep(2)
    assert len(fake.messages_to(to)) == 1


async def test_an_unsubscribed_address_gets_transactional_messages_but_no_notifications(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type(key="order.receipt", category="transactional")
    await api.add_type(key="weekly.digest", category="notification")
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    suppressed = await api.client.post(
        api.url("/suppressions"), headers=api.headers, json={"email": to, "reason": "unsubscribed"}
    )
    assert suppressed.status_code == 201, suppressed.text
    data = {"lead_name": "Ada"}
    receipt = await api.send({"type": "order.receipt", "to": to, "data": data})
    digest = await api.send({"type": "weekly.digest", "to": to, "data": data})

    assert (await api.settled(receipt.json()["ids"][0]))["status"] == "sent"
    assert (await api.settled(digest.json()["ids"][0]))["status"] == "suppressed"
    assert [m.subject for m in fake.messages_to(to)] == ["New lead: Ada"]


async def test_a_bounced_address_gets_no_transactional_message(api: Api, fake: FakeResend) -> None:
    await api.add_type(key="order.receipt", category="transactional")
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    suppressed = await api.client.post(
        api.url("/suppressions"), headers=api.headers, json={"email": to, "reason": "hard_bounce"}
    )
    assert suppressed.status_code == 201, suppressed.text
    receipt = await api.send({"type": "order.receipt", "to": to, "data": {"lead_name": "Ada"}})
    assert (await api.settled(receipt.json()["ids"][0]))["status"] == "suppressed"
    assert fake.messages_to(to) == []


async def test_messages_are_listed_newest_first_filtered_and_paged(api: Api) -> None:
    await api.add_type()
    await api.add_type(key="order.receipt", category="transactional")
    sent = await api.send({"messages": [alert(f"r{i}@customer.example") for i in range(3)]})
    other = await api.send(
        {"type": "order.receipt", "to": "r0@customer.example", "data": {"lead_name": "Ada"}}
    )
    assert sent.status_code == other.status_code == 202

    async def page(**params: Any) -> dict[str, Any]:
        response = await api.client.get(api.url("/messages"), headers=api.headers, params=params)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    alerts = await page(type="lead.qualified.alert", limit=2)
    assert len(alerts["items"]) == 2
    rest = await page(type="lead.qualified.alert", limit=2, cursor=alerts["next_cursor"])
    assert rest["next_cursor"] is None
    assert {m["id"] for m in alerts["items"] + rest["items"]} == set(sent.json()["ids"])
    to_r0 = await page(to="R0@customer.example")
    assert {m["type"] for m in to_r0["items"]} == {"lead.qualified.alert", "order.receipt"}
    assert (await page(status="failed"))["items"] == []
