"""Message types made from a template of the library: pinned to a version, or
following its latest version at each send; checked at save like any type."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from tests.messages.test_message_types import message_type
from tests.messages.test_messages import Api


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


def content(word: str) -> dict[str, Any]:
    return {
        "subject": f"{word}: {{{{ attributes.lead_name }}}}",
        "html_body": f"<p>{word} body for {{{{ attributes.lead_name }}}}</p>",
    }


async def library_template(api: Api) -> str:
    """A template of the library with versions 1 ("First") and 2 ("Second")."""
    base = api.url("/templates")
    created = await api.client.post(
        base, headers=api.headers, json={"name": "Receipt", **content("First")}
    )
    assert created.status_code == 201, created.text
    template_id: str = created.json()["id"]
    second = await api.client.post(
        f"{base}/{template_id}/versions", headers=api.headers, json=content("Second")
    )
    assert second.status_code == 201, second.text
    return template_id


def from_template(key: str, template_id: str, version: int | None = None) -> dict[str, Any]:
    body = message_type(key=key, template_id=template_id, default_recipients=[])
    for field in ("subject", "html_body"):
        body.pop(field)
    if version is not None:
        body["template_version"] = version
    return body


async def send_one(api: Api, key: str) -> str:
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    body = {"type": key, "to": to, "data": {"lead_name": "Ada"}}
    (message_id,) = (await api.send(body)).json()["ids"]
    assert (await api.settled(message_id))["status"] == "sent"
    return to


@pytest.mark.usefixtures("workers")
async def test_a_pinned_type_sends_its_version_and_a_latest_one_follows_new_versions(
    api: Api, fake: FakeResend
) -> None:
    template_id = await library_template(api)
    pinned = await api.client.post(
        api.url("/message-types"),
        headers=api.headers,
        json=from_template("pinned", template_id, version=1),
    )
    assert pinned.status_code == 201, pinned.text
    assert (pinned.json()["template_version"], pinned.json()["subject"]) == (
        1,
        "First: {{ attributes.lead_name }}",
    )
    latest = await api.client.post(
        api.url("/message-types"), headers=api.headers, json=from_template("latest", template_id)
    )
    assert latest.status_code == 201, latest.text

    assert [m.subject for m in fake.messages_to(await send_one(api, "pinned"))] == ["First: Ada"]
    assert [m.subject for m in fake.messages_to(await send_one(api, "latest"))] == ["Second: Ada"]

    third = await api.client.post(
        api.url(f"/templates/{template_id}/versions"), headers=api.headers, json=content("Third")
    )
    assert third.status_code == 201, third.text
    assert [m.subject for m in fake.messages_to(await send_one(api, "latest"))] == ["Third: Ada"]
    assert [m.subject for m in fake.messages_to(await send_one(api, "pinned"))] == ["First: Ada"]


async def test_an_unknown_template_or_version_is_a_422_naming_it(api: Api) -> None:
    template_id = await library_template(api)
    url = api.url("/message-types")
    unknown = await api.client.post(
        url, headers=api.headers, json=from_template("a", str(uuid.uuid4()))
    )
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (422, "template_id")
    version = await api.client.post(
        url, headers=api.headers, json=from_template("b", template_id, version=9)
    )
    assert (version.status_code, version.json()["error"]["field"]) == (422, "template_version")


async def test_a_template_reading_a_variable_the_type_does_not_declare_is_refused(
    api: Api,
) -> None:
    template_id = await library_template(api)
    body = from_template("c", template_id, version=1)
    body["variables"] = [{"name": "score", "type": "number"}]
    response = await api.client.post(api.url("/message-types"), headers=api.headers, json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "undeclared_template_variable"


async def test_a_type_needs_a_subject_or_a_template(api: Api) -> None:
    body = message_type(key="d")
    body.pop("subject")
    response = await api.client.post(api.url("/message-types"), headers=api.headers, json=body)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "subject"
