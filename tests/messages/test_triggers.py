"""Trigger rules on the real stack: upstream events on ``leads.v1`` / ``orders.v1``
become messages sent through the fake Resend, each (event, rule) at most once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import TOPIC_LEADS, TOPIC_ORDERS
from service.kafka import Producer
from service.settings import Settings
from service.triggers.logic import apply
from tests.conftest import TokenFactory, eventually
from tests.fakes.resend_server import FakeResend
from tests.messages.test_message_types import message_type
from worker.trigger import lead_decoder


class Api:
    """One sponsor's triggers API, for one test."""

    def __init__(self, client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> None:
        self.client = client
        self.sponsor = sponsor
        self.headers = token(sponsor)

    def url(self, path: str = "") -> str:
        return f"/api/v1/sponsors/{self.sponsor}{path}"

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
        **fields,
    }
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


BAD_CONDITIONS = [
    ({"field": "intent_score", "op": "between", "value": 1}, "condition.op"),
    ({"all": [{"field": "intent_score", "op": "gt", "value": "high"}]}, "condition.all.0.value"),
    ({"any": [{"not": {"field": "a..b", "op": "exists"}}]}, "condition.any.0.not.field"),
    ({"field": "type", "op": "in", "value": "hot"}, "condition.value"),
    ({"all": {"field": "type", "op": "eq", "value": 1}}, "condition.all"),
    ({"field": "type", "op": "eq", "value": 1, "extra": 2}, "condition"),
]


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"field": "type", "op": "exists"}
    for _ in range(depth):
        node = {"not": node}
    return node


@pytest.mark.parametrize(
    ("tree", "field"),
    [*BAD_CONDITIONS, (_nested(6), "condition" + ".not" * 6)],
)
async def test_a_bad_condition_is_refused_at_save_naming_its_path(
    api: Api, tree: Any, field: str
) -> None:
    created = await api.client.post(
        api.url("/message-types"), headers=api.headers, json=message_type()
    )
    assert created.status_code == 201, created.text
    rule = {
        "name": "Bad",
        "topic": TOPIC_LEADS,
        "condition": tree,
        "actions": [{"message_type": "lead.qualified.alert", "recipient": "team"}],
    }
    response = await api.post("/triggers", rule)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_condition", field)
    listed = await api.client.get(api.url("/triggers"), headers=api.headers)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"topic": "payments.v9"}, "unknown_topic", "topic"),
        (
            {"actions": [{"message_type": "nope", "recipient": "lead"}]},
            "unknown_message_type",
            "actions.0.message_type",
        ),
        (
            {"actions": [{"message_type": "lead.qualified.alert", "recipient": "someone"}]},
            "invalid_recipient",
            "actions.0.recipient",
        ),
        (
            {
                "actions": [
                    {
                        "message_type": "lead.qualified.alert",
                        "recipient": "lead",
                        "data": {"phone": "attributes.phone"},
                    }
                ]
            },
            "invalid_message_data",
            "actions.0.data.phone",
        ),
    ],
)
async def test_a_rule_that_could_not_fire_as_written_is_refused_at_save(
    api: Api, change: dict[str, Any], code: str, field: str
) -> None:
    await api.client.post(api.url("/message-types"), headers=api.headers, json=message_type())
    rule = {
        "name": "Rule",
        "topic": TOPIC_LEADS,
        "condition": {"all": []},
        "actions": [{"message_type": "lead.qualified.alert", "recipient": "team"}],
        **change,
    }
    response = await api.post("/triggers", rule)
    assert response.status_code == 422, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (code, field)


async def test_a_rule_is_created_read_listed_replaced_and_deleted(api: Api) -> None:
    await api.client.post(api.url("/message-types"), headers=api.headers, json=message_type())
    rule = {
        "name": "Hot leads",
        "topic": TOPIC_LEADS,
        "condition": {"field": "intent_level", "op": "eq", "value": "hot"},
        "actions": [{"message_type": "lead.qualified.alert", "recipient": "team"}],
    }
    created = await api.post("/triggers", rule)
    assert created.status_code == 201, created.text
    rule_url = api.url(f"/triggers/{created.json()['id']}")
    got = await api.client.get(rule_url, headers=api.headers)
    assert got.json()["condition"] == rule["condition"]
    replaced = await api.client.put(rule_url, headers=api.headers, json={**rule, "enabled": False})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["enabled"] is False
    listed = await api.client.get(api.url("/triggers"), headers=api.headers)
    assert [r["id"] for r in listed.json()["items"]] == [created.json()["id"]]
    assert (await api.client.delete(rule_url, headers=api.headers)).status_code == 204
    assert (await api.client.get(rule_url, headers=api.headers)).status_code == 404


async def test_installing_the_starter_twice_keeps_one_rule_and_its_types(api: Api) -> None:
    first = await install_starter(api, "sales@sponsor.example")
    second = await install_starter(api, "sales@sponsor.example")
    assert first["id"] == second["id"]
    types = await api.client.get(api.url("/message-types"), headers=api.headers)
    assert sorted(t["key"] for t in types.json()["items"]) == [
        "lead.qualified.alert",
        "lead.thank-you",
    ]


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
