"""Platform-wide message types: an admin manages them, every sponsor may send them,
and a sponsor's own type of the same key wins."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from tests.messages.test_message_types import message_type
from tests.messages.test_messages import Api

ADMIN_URL = "/api/v1/admin/message-types"


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


def platform_type(key: str, **overrides: Any) -> dict[str, Any]:
    body = message_type(
        key=key, subject="Platform: {{ attributes.lead_name }}", default_recipients=[]
    )
    return {**body, **overrides}


def unique_key() -> str:
    return f"platform.{uuid.uuid4().hex[:10]}"


async def create(client: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any]) -> Any:
    response = await client.post(ADMIN_URL, headers=admin, json=body)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.usefixtures("workers")
async def test_a_sponsor_sends_a_platform_type_unless_it_has_its_own_of_that_key(
    api: Api, admin: dict[str, str], fake: FakeResend
) -> None:
    key = unique_key()
    await create(api.client, admin, platform_type(key))
    first, second = (f"{uuid.uuid4().hex[:8]}@customer.example" for _ in range(2))

    body = {"type": key, "to": first, "data": {"lead_name": "Ada"}}
    (platform_id,) = (await api.send(body)).json()["ids"]
    assert (await api.settled(platform_id))["status"] == "sent"
    assert [m.subject for m in fake.messages_to(first)] == ["Platform: Ada"]

    await api.add_type(key=key, subject="Own: {{ attributes.lead_name }}")
    (own_id,) = (await api.send({**body, "to": second})).json()["ids"]
    assert (await api.settled(own_id))["status"] == "sent"
    assert [m.subject for m in fake.messages_to(second)] == ["Own: Ada"]


async def test_an_admin_reads_lists_replaces_and_deletes_a_platform_type(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    key = unique_key()
    created = await create(client, admin, platform_type(key))
    one = f"{ADMIN_URL}/{created['id']}"

    assert (await client.get(one, headers=admin)).json()["key"] == key
    listed = (await client.get(ADMIN_URL, headers=admin, params={"limit": 500})).json()
    assert key in [t["key"] for t in listed["items"]]
    replaced = await client.put(one, headers=admin, json=platform_type(key, subject="New"))
    assert replaced.status_code == 200 and replaced.json()["subject"] == "New"
    refused = await client.put(
        one, headers=admin, json=platform_type(key, html_body="{{ attributes.__class__ }}")
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "html_body"
    assert (await client.delete(one, headers=admin)).status_code == 204
    assert (await client.get(one, headers=admin)).status_code == 404


async def test_a_platform_key_is_unique_among_platform_types_only(
    api: Api, admin: dict[str, str]
) -> None:
    key = unique_key()
    await api.add_type(key=key)
    await create(api.client, admin, platform_type(key))
    again = await api.client.post(ADMIN_URL, headers=admin, json=platform_type(key))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "message_type_exists"


async def test_only_an_admin_manages_platform_types_and_a_sponsor_sees_only_its_own(
    api: Api, admin: dict[str, str]
) -> None:
    created = await create(api.client, admin, platform_type(unique_key()))
    for method, path in [
        ("POST", ADMIN_URL),
        ("GET", ADMIN_URL),
        ("GET", f"{ADMIN_URL}/{created['id']}"),
        ("PUT", f"{ADMIN_URL}/{created['id']}"),
        ("DELETE", f"{ADMIN_URL}/{created['id']}"),
    ]:
        response = await api.client.request(
            method, path, headers=api.headers, json=platform_type("x") if method != "GET" else None
        )
        assert response.status_code == 403, (method, path)
    own = await api.client.get(api.url("/message-types"), headers=api.headers)
    assert created["key"] not in [t["key"] for t in own.json()["items"]]
    by_id = await api.client.get(api.url(f"/message-types/{created['id']}"), headers=api.headers)
    assert by_id.status_code == 404


async def test_starter_types_install_as_the_sponsors_own_beside_a_platform_type(
    api: Api, admin: dict[str, str]
) -> None:
    platform = await create(
        api.client,
        admin,
        platform_type(
            "payment.failed", subject="Platform", variables=[], html_body="<p>Failed</p>"
        ),
    )
    try:
        response = await api.client.post(
            api.url("/message-types/starter"),
            headers=api.headers,
            json={"keys": ["payment.failed"]},
        )
    finally:  # platform keys are shared by every test's sponsor
        await api.client.delete(f"{ADMIN_URL}/{platform['id']}", headers=admin)
    assert response.status_code == 201, response.text
    (installed,) = response.json()
    assert installed["id"] != platform["id"]
    assert installed["subject"] != "Platform"
    own = await api.client.get(api.url(f"/message-types/{installed['id']}"), headers=api.headers)
    assert own.status_code == 200


async def test_the_analysts_view_shows_a_platform_type_to_an_admin_without_a_sponsor(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    made = await create(client, admin, platform_type(unique_key()))
    view = await client.get("/api/v1/stats/message-types?limit=1000", headers=admin)
    assert view.status_code == 200, view.text
    (row,) = [item for item in view.json()["items"] if item["type_id"] == made["id"]]
    assert row["sponsor_id"] is None and row["messages"] == 0
