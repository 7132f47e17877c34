"""Trigger rules through the API: saved, read, replaced, deleted; refused at save,
with a 422 naming the path, when they could not fire as written."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from schemas.events import TOPIC_LEADS
from tests.conftest import TokenFactory
from tests.messages.test_message_types import message_type
from tests.messages.test_triggers import Api, install_starter


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


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
