"""Message types: created, read, listed, replaced and deleted per sponsor; their
template checked at save like a template's, against the variables they declare."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import TokenFactory


def message_type(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": "lead.qualified.alert",
        "category": "notification",
        "subject": "New lead: {{ attributes.lead_name }}",
        "html_body": "<p>{{ attributes.lead_name }} scored {{ attributes.score }}.</p>",
        "variables": [
            {"name": "lead_name", "type": "string"},
            {"name": "score", "type": "number", "required": False, "fallback": 0},
        ],
        "default_recipients": ["Sales@Sponsor.example"],
    }
    body.update(overrides)
    return body


def url(sponsor: str, path: str = "") -> str:
    return f"/api/v1/sponsors/{sponsor}/message-types{path}"


async def test_a_message_type_is_created_read_listed_replaced_and_deleted(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    headers = token(sponsor)
    created = await client.post(url(sponsor), headers=headers, json=message_type())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"] == "lead.qualified.alert"
    assert body["default_recipients"] == ["sales@sponsor.example"]
    assert body["variables"][1] == {
        "name": "score",
        "type": "number",
        "required": False,
        "fallback": 0,
    }
    type_url = url(sponsor, f"/{body['id']}")
    assert (await client.get(type_url, headers=headers)).json()["subject"] == body["subject"]
    listed = (await client.get(url(sponsor), headers=headers)).json()
    assert [t["id"] for t in listed["items"]] == [body["id"]]

    replaced = await client.put(
        type_url, headers=headers, json=message_type(subject="Lead {{ attributes.lead_name }}")
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["subject"] == "Lead {{ attributes.lead_name }}"
    assert (await client.delete(type_url, headers=headers)).status_code == 204
    assert (await client.get(type_url, headers=headers)).status_code == 404


async def test_a_key_is_unique_per_sponsor(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    headers = token(sponsor)
    assert (
        await client.post(url(sponsor), headers=headers, json=message_type())
    ).status_code == 201
    again = await client.post(url(sponsor), headers=headers, json=message_type())
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "message_type_exists"


async def test_a_template_reading_an_undeclared_variable_is_refused(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    response = await client.post(
        url(sponsor),
        headers=token(sponsor),
        json=message_type(html_body="<p>{{ attributes.lead_name }} {{ attributes.phone }}</p>"),
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "undeclared_template_variable"
    assert "attributes.phone" in error["message"]


async def test_a_template_with_a_syntax_error_is_refused_naming_its_field(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    response = await client.post(
        url(sponsor), headers=token(sponsor), json=message_type(html_body="<p>{{ oops </p>")
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "template_syntax_error"
    assert response.json()["error"]["field"] == "html_body"


async def test_writing_a_message_type_needs_the_write_scope(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    read_only = token(sponsor, scopes="campaigns:read")
    response = await client.post(url(sponsor), headers=read_only, json=message_type())
    assert response.status_code == 403
    assert (await client.get(url(sponsor), headers=read_only)).status_code == 200
