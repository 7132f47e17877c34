"""Trigger rules on the real stack: upstream events on ``leads.v1`` / ``orders.v1``
become messages sent through the fake Resend, each (event, rule) at most once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import TOPIC_LEADS, TOPIC_ORDERS
from service.kafka import Producer
from service.settings import Settings
from service.triggers.logic import apply
from tests.conftest import SponsorApi, TokenFactory, eventually
from tests.fakes.resend_server import FakeResend
from tests.messages.test_message_types import message_type
from worker.trigger import lead_decoder


class Api(SponsorApi):
    """One sponsor's triggers API, for one test."""

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(self.url(path), headers=self.headers, json=body)


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


def lead_upsert(sponsor: str, email: str, **fields: Any) -> tuple[str, str, bytes]:
    event = {
        "id": uuid.uuid4().hex,
        "type": "lead.upserted",
        "sponsor_id": sponsor,
        "email": email,
        "updated_at": datetime.now(UTC).isoformat(),
    }
    event.update(fields)
    return (TOPIC_LEADS, f"{sponsor}:{email}", orjson.dumps(event))


async def publish(settings: Settings, messages: list[tuple[str, str, bytes]]) -> None:
    producer = Producer(settings)
    try:
        await producer.send(messages)
    finally:
        await asyncio.to_thread(producer.close)


def address(domain: str) -> str:
    return f"{uuid.uuid4().hex[:10]}@{domain}"


async def install_starter(api: Api, team: str) -> dict[str, Any]:
    response = await api.post("/triggers/starter", {"team": [team]})
    assert response.status_code == 201, response.text
    (rule,) = response.json()
    assert rule["topic"] == TOPIC_LEADS
    return dict(rule)


@pytest.mark.usefixtures("workers")
async def test_a_lead_turning_hot_alerts_the_team_and_thanks_the_lead(
    api: Api, fake: FakeResend, migrated: Settings
) -> None:
    team, lead = address("sponsor.example"), address("customer.example")
    await install_starter(api, team)
    await publish(
        migrated,
        [
            lead_upsert(
                api.sponsor,
                lead,
                name="Ada Lovelace",
                first_name="Ada",
                company="Engines Ltd",
                intent_level="hot",
                intent_score=55,
            )
        ],
    )

    async def both_sent() -> bool:
        return bool(fake.messages_to(team) and fake.messages_to(lead))

    await eventually(both_sent, within=5)
    (alert,) = fake.messages_to(team)
    assert alert.subject == "Qualified lead: Ada Lovelace"
    assert lead in (alert.html or "") and "Engines Ltd" in (alert.html or "")
    (thanks,) = fake.messages_to(lead)
    assert thanks.subject == "Thank you for your interest in Test Sponsor"
    assert "Hi Ada," in (thanks.html or "")


@pytest.mark.usefixtures("workers")
async def test_a_lead_that_stays_hot_through_later_updates_is_alerted_once(
    api: Api, fake: FakeResend, migrated: Settings
) -> None:
    team, lead = address("sponsor.example"), address("customer.example")
    await install_starter(api, team)
    await publish(migrated, [lead_upsert(api.sponsor, lead, intent_level="hot")])
    await eventually(lambda: _sent(fake, lead), within=5)
    # Upstream keeps the lead hot while it changes other fields: new events, same lead.
    await publish(
        migrated,
        [lead_upsert(api.sponsor, lead, intent_level="hot", intent_score=n) for n in (80, 90)],
    )
    await asyncio.sleep(2)
    assert len(fake.messages_to(team)) == 1
    assert len(fake.messages_to(lead)) == 1


@pytest.mark.usefixtures("workers")
async def test_a_score_past_the_threshold_qualifies_and_a_cold_low_score_does_not(
    api: Api, fake: FakeResend, migrated: Settings
) -> None:
    team = address("sponsor.example")
    await install_starter(api, team)
    scored, cold = address("customer.example"), address("customer.example")
    await publish(
        migrated,
        [
            lead_upsert(api.sponsor, cold, intent_level="cold", intent_score=10),
            lead_upsert(api.sponsor, scored, intent_level="warm", intent_score=70),
        ],
    )
    await eventually(lambda: _sent(fake, scored), within=5)
    await asyncio.sleep(1)
    assert fake.messages_to(cold) == []
    assert len(fake.messages_to(team)) == 1


@pytest.mark.usefixtures("workers")
async def test_a_lead_that_turned_hot_before_the_rule_existed_sends_nothing(
    api: Api, fake: FakeResend, migrated: Settings
) -> None:
    team, old, new = (address("example.com") for _ in range(3))
    await install_starter(api, team)
    before = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    await publish(
        migrated,
        [
            lead_upsert(api.sponsor, old, intent_level="hot", updated_at=before),
            lead_upsert(api.sponsor, new, intent_level="hot"),
        ],
    )
    await eventually(lambda: _sent(fake, new), within=5)
    await asyncio.sleep(1)
    assert fake.messages_to(old) == []
    assert len(fake.messages_to(team)) == 1


async def _sent(fake: FakeResend, to: str) -> bool:
    return bool(fake.messages_to(to))


@pytest.mark.usefixtures("workers")
async def test_a_trigger_topic_replayed_from_offset_0_sends_nothing_twice(
    api: Api,
    fake: FakeResend,
    migrated: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    team = address("sponsor.example")
    await install_starter(api, team)
    leads = [address("customer.example") for _ in range(3)]
    events = [lead_upsert(api.sponsor, lead, intent_level="hot") for lead in leads]
    await publish(migrated, events)

    async def all_sent() -> bool:
        return all(fake.messages_to(lead) for lead in leads) and len(fake.messages_to(team)) == 3

    await eventually(all_sent, within=10)
    # The same events again, as a replay of the topic from its first offset delivers them.
    await publish(migrated, events)
    decode = lead_decoder(TOPIC_LEADS)
    async with sessions.begin() as session:
        assert await apply(session, migrated, [decode(payload) for _, _, payload in events]) == 0
    await asyncio.sleep(2)
    assert len(fake.messages_to(team)) == 3
    assert all(len(fake.messages_to(lead)) == 1 for lead in leads)


@pytest.mark.usefixtures("workers")
async def test_an_order_rule_sends_to_an_address_in_the_event_when_its_status_changes(
    api: Api, fake: FakeResend, migrated: Settings
) -> None:
    created = await api.client.post(
        api.url("/message-types"),
        headers=api.headers,
        json=message_type(key="order.paid", category="transactional", default_recipients=[]),
    )
    assert created.status_code == 201, created.text
    rule = {
        "name": "Receipt",
        "topic": TOPIC_ORDERS,
        "condition": {"field": "data.status", "op": "changed_to", "value": "paid"},
        "actions": [
            {
                "message_type": "order.paid",
                "recipient": "event:data.customer.email",
                "data": {"lead_name": "data.customer.name", "score": "data.total"},
            }
        ],
    }
    assert (await api.post("/triggers", rule)).status_code == 201
    paid, already = address("customer.example"), address("customer.example")

    def order(to: str, previous: str) -> tuple[str, str, bytes]:
        event_id = uuid.uuid4().hex
        data = {"status": "paid", "total": 42, "customer": {"email": to, "name": "Ada"}}
        event = {"event_id": event_id, "sponsor_id": api.sponsor, "type": "order.updated"}
        body = {**event, "data": data, "previous": {"status": previous}}
        return (TOPIC_ORDERS, event_id, orjson.dumps(body))

    await publish(migrated, [order(already, "paid"), order(paid, "pending")])
    await eventually(lambda: _sent(fake, paid), within=5)
    (receipt,) = fake.messages_to(paid)
    assert "Ada scored 42." in (receipt.html or "")
    await asyncio.sleep(1)
    assert fake.messages_to(already) == []


@pytest.mark.usefixtures("workers")
async def test_an_action_without_an_address_in_the_event_is_skipped_and_the_others_sent(
    api: Api, fake: FakeResend, migrated: Settings
) -> None:
    await api.client.post(api.url("/message-types"), headers=api.headers, json=message_type())
    fixed, lead = address("sponsor.example"), address("customer.example")
    actions = [
        {"message_type": "lead.qualified.alert", "recipient": "event:attributes.owner"},
        {"message_type": "lead.qualified.alert", "recipient": fixed, "data": {"lead_name": "name"}},
    ]
    rule = {"name": "Both", "topic": TOPIC_LEADS, "condition": {"all": []}, "actions": actions}
    assert (await api.post("/triggers", rule)).status_code == 201
    await publish(migrated, [lead_upsert(api.sponsor, lead, name="Ada")])
    await eventually(lambda: _sent(fake, fixed), within=5)
    assert [m.subject for m in fake.messages_to(fixed)] == ["New lead: Ada"]


async def test_a_polled_batch_fires_once_per_key_and_a_refused_action_spares_the_others(
    api: Api, migrated: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.client.post(api.url("/message-types"), headers=api.headers, json=message_type())
    team = address("sponsor.example")
    actions = [
        {"message_type": "lead.qualified.alert", "recipient": team, "data": {"lead_name": "name"}},
        # A number where the type wants a string: refused for the lead that has one.
        {
            "message_type": "lead.qualified.alert",
            "recipient": "lead",
            "data": {"lead_name": "attributes.nick"},
        },
    ]
    rule = {
        "name": "Each lead once",
        "topic": TOPIC_LEADS,
        "condition": {"all": []},
        "actions": actions,
        "once_per": "email",
    }
    assert (await api.post("/triggers", rule)).status_code == 201
    refused, kept = address("customer.example"), address("customer.example")
    events = [
        lead_upsert(api.sponsor, refused, name="Ada", attributes={"nick": 5}),
        lead_upsert(api.sponsor, kept, name="Bo", attributes={"nick": "Bo"}),
        lead_upsert(api.sponsor, kept, name="Bo", attributes={"nick": "Bob"}),
    ]
    decode = lead_decoder(TOPIC_LEADS)
    async with sessions() as session, session.begin():
        fired = await apply(session, migrated, [decode(payload) for _, _, payload in events])
        rows = await session.execute(
            text("SELECT to_email, data FROM messages WHERE sponsor_id = :s ORDER BY created_at"),
            {"s": api.sponsor},
        )
        queued = sorted((row.to_email, row.data["lead_name"]) for row in rows)
        # Not committed: the suite's workers never send these.
        await session.rollback()
    assert fired == 2
    assert queued == sorted([(team, "Ada"), (team, "Bo"), (kept, "Bo")])


@pytest.mark.usefixtures("workers")
async def test_the_trigger_role_keeps_paid_orders_for_the_digests_without_any_rule(
    api: Api, sessions: async_sessionmaker[AsyncSession], migrated: Settings
) -> None:
    buyer = address("customer.example")

    def order(status: str) -> tuple[str, str, bytes]:
        body = {
            "event_id": uuid.uuid4().hex,
            "sponsor_id": api.sponsor,
            "type": "order.updated",
            "data": {
                "status": status,
                "total": 42,
                "currency": "EUR",
                "customer": {"email": buyer},
            },
        }
        # One key for both: one partition, read in order, so the paid one comes last.
        return (TOPIC_ORDERS, buyer, orjson.dumps(body))

    await publish(migrated, [order("pending"), order("paid")])

    async def kept() -> list[Any]:
        async with sessions() as session:
            rows = await session.execute(
                text("SELECT kind, email, summary FROM digest_events WHERE sponsor_id = :s"),
                {"s": api.sponsor},
            )
            return list(rows)

    rows = await eventually(kept, within=10)
    assert [tuple(r) for r in rows] == [("conversion", buyer, {"total": "42", "currency": "EUR"})]
