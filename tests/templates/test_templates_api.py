"""The templates library: CRUD, immutable versions, declared variables, campaigns from templates."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.models import CampaignLink
from tests import factories
from tests.conftest import TokenFactory


def template_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Follow-up",
        "category": "follow-up",
        "subject": "Thanks, {{ first_name }}",
        "message_body": "Hi {{ first_name }} from {{ company | default('your team') }}.",
    }
    body.update(overrides)
    return body


class Templates:
    def __init__(self, client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> None:
        self.client = client
        self.base = f"/api/v1/sponsors/{sponsor}/templates"
        self.headers = token(sponsor)

    async def create(self, **overrides: Any) -> dict[str, Any]:
        response = await self.client.post(
            self.base, headers=self.headers, json=template_body(**overrides)
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


async def test_a_template_is_created_with_version_one_and_detected_variables(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    created = await Templates(client, sponsor, token).create()
    assert created["latest_version"] == 1
    assert created["category"] == "follow-up"
    assert created["latest"]["version"] == 1
    assert created["latest"]["variables"] == ["company", "first_name"]


async def test_templates_are_validated_like_campaigns(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    api = Templates(client, sponsor, token)
    cases = [
        ({"message_body": "{{ ''.__class__ }}"}, "template_sandbox_violation", "message_body"),
        ({"subject": "Hi {{ nobody }}"}, "unknown_template_variable", "subject"),
        ({"html_body": "<p>{% if %}</p>"}, "template_syntax_error", "html_body"),
    ]
    for overrides, code, field in cases:
        response = await client.post(api.base, headers=api.headers, json=template_body(**overrides))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["field"] == field


async def test_declared_variables_must_be_known_and_cover_what_is_used(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    api = Templates(client, sponsor, token)
    response = await client.post(
        api.base, headers=api.headers, json=template_body(variables=["first_name", "shoe_size"])
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_template_variable"
    response = await client.post(
        api.base, headers=api.headers, json=template_body(variables=["first_name"])
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "undeclared_template_variable"
    assert "company" in response.json()["error"]["message"]
    created = await api.create(
        message_body="{{ first_name }} at booth {{ attributes.booth }}",
        variables=["first_name", "attributes.booth"],
    )
    assert created["latest"]["variables"] == ["attributes.booth", "first_name"]


async def test_versions_are_immutable_and_numbered(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    api = Templates(client, sponsor, token)
    created = await api.create()
    url = f"{api.base}/{created['id']}"
    response = await client.post(
        f"{url}/versions",
        headers=api.headers,
        json={"subject": "v2 {{ name }}", "message_body": "B"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 2
    got = (await client.get(url, headers=api.headers)).json()
    assert got["latest_version"] == 2 and got["latest"]["subject"] == "v2 {{ name }}"
    versions = (await client.get(f"{url}/versions", headers=api.headers)).json()
    assert [v["version"] for v in versions] == [2, 1]
    first = (await client.get(f"{url}/versions/1", headers=api.headers)).json()
    assert first["subject"] == "Thanks, {{ first_name }}"
    missing = await client.get(f"{url}/versions/9", headers=api.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "template_version_not_found"


async def test_templates_list_rename_and_delete(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    api = Templates(client, sponsor, token)
    one = await api.create(name="One", category="welcome")
    await api.create(name="Two", category="follow-up")
    listed = (await client.get(api.base, headers=api.headers, params={"limit": 1})).json()
    assert len(listed["items"]) == 1 and listed["next_cursor"]
    rest = (
        await client.get(
            api.base, headers=api.headers, params={"limit": 1, "cursor": listed["next_cursor"]}
        )
    ).json()
    assert {listed["items"][0]["name"], rest["items"][0]["name"]} == {"One", "Two"}
    welcome = await client.get(api.base, headers=api.headers, params={"category": "welcome"})
    assert [t["name"] for t in welcome.json()["items"]] == ["One"]
    renamed = await client.patch(
        f"{api.base}/{one['id']}", headers=api.headers, json={"name": "Uno"}
    )
    assert renamed.json()["name"] == "Uno" and renamed.json()["category"] == "welcome"
    assert (await client.delete(f"{api.base}/{one['id']}", headers=api.headers)).status_code == 204
    gone = await client.get(f"{api.base}/{one['id']}", headers=api.headers)
    assert gone.status_code == 404


async def test_another_sponsors_template_does_not_exist_for_you(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, admin: dict[str, str]
) -> None:
    created = await Templates(client, sponsor, token).create()
    await client.put(
        "/api/v1/sponsors/tpl-intruder",
        headers=admin,
        json={"name": "I", "from_email": "i@i.example", "postal_address": "1 I Road"},
    )
    response = await client.get(
        f"/api/v1/sponsors/tpl-intruder/templates/{created['id']}", headers=token("tpl-intruder")
    )
    assert response.status_code == 404
    forbidden = await client.get(
        f"/api/v1/sponsors/{sponsor}/templates", headers=token("tpl-intruder")
    )
    assert forbidden.status_code == 403


async def test_a_campaign_from_a_template_records_the_version_it_used(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    api = Templates(client, sponsor, token)
    created = await api.create(message_body="Visit [our booth](https://example.com/booth)")
    await client.post(
        f"{api.base}/{created['id']}/versions",
        headers=api.headers,
        json={"subject": "Second", "message_body": "[Map](https://example.com/map)"},
    )
    campaigns = f"/api/v1/sponsors/{sponsor}/campaigns"
    latest = await client.post(
        campaigns,
        headers=api.headers,
        json={"name": "From template", "template_id": created["id"], "draft": True},
    )
    assert latest.status_code == 202, latest.text
    assert latest.json()["template_version"] == 2
    assert latest.json()["subject"] == "Second"
    pinned = await client.post(
        campaigns,
        headers=api.headers,
        json={"name": "Pinned", "template_id": created["id"], "template_version": 1, "draft": True},
    )
    assert pinned.json()["template_version"] == 1
    assert pinned.json()["template_id"] == created["id"]
    assert pinned.json()["subject"] == "Thanks, {{ first_name }}"
    async with sessions() as session:
        links = (
            await session.scalars(
                select(CampaignLink.url).where(CampaignLink.campaign_id == pinned.json()["id"])
            )
        ).all()
    assert list(links) == ["https://example.com/booth"]


async def test_a_campaign_needs_content_or_a_template(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    campaigns = f"/api/v1/sponsors/{sponsor}/campaigns"
    body = factories.campaign()
    del body["message_body"]
    response = await client.post(campaigns, headers=token(sponsor), json=body)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "message_body"
    unknown = await client.post(
        campaigns,
        headers=token(sponsor),
        json={"name": "x", "template_id": "00000000-0000-0000-0000-000000000000"},
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "template_not_found"
