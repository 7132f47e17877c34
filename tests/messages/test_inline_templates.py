"""One-off messages with their own template instead of a type: checked at the request
like a type's template, rendered with the data as given, sent as any message."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from tests.messages.test_messages import Api

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


def one_off(to: str | None, **template: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": {
            "subject": "Your code: {{ attributes.code }}",
            "html_body": "<p>Hi {{ attributes.name }}, your code is "
            "<strong>{{ attributes.code }}</strong>.</p>",
            **template,
        },
        "data": {"name": "Ada", "code": 424242},
    }
    if to is not None:
        body["to"] = to
    return body


def address() -> str:
    return f"{uuid.uuid4().hex[:8]}@customer.example"


async def test_a_message_with_its_own_template_is_rendered_with_its_data_and_sent(
    api: Api, fake: FakeResend
) -> None:
    to = address()
    response = await api.send(one_off(to))
    assert response.status_code == 202, response.text
    (message_id,) = response.json()["ids"]

    status = await api.settled(message_id)
    assert (status["status"], status["type"]) == ("sent", None)
    (sent,) = fake.messages_to(to)
    assert sent.subject == "Your code: 424242"
    assert "Hi Ada, your code is <strong>424242</strong>." in (sent.html or "")


async def test_a_one_off_template_with_markdown_sends_its_text_too(
    api: Api, fake: FakeResend
) -> None:
    to = address()
    body = one_off(to, html_body=None, message_body="Hi **{{ attributes.name }}**")
    (message_id,) = (await api.send(body)).json()["ids"]
    assert (await api.settled(message_id))["status"] == "sent"
    (sent,) = fake.messages_to(to)
    assert "<strong>Ada</strong>" in (sent.html or "")
    assert "Hi Ada" in (sent.text or "")


@pytest.mark.parametrize(
    ("template", "code", "field"),
    [
        (
            {"html_body": "<p>{{ attributes.__class__ }}</p>"},
            "template_sandbox_violation",
            "html_body",
        ),
        ({"subject": "Hi {{ attributes.name "}, "template_syntax_error", "subject"),
        ({"html_body": '<a href="javascript:alert(1)">x</a>'}, "invalid_link", "html_body"),
        ({"html_body": "{{ secrets }}"}, "unknown_template_variable", "html_body"),
    ],
)
async def test_a_one_off_template_that_must_not_be_sent_is_a_422_naming_its_field(
    api: Api, template: dict[str, Any], code: str, field: str
) -> None:
    body = {"messages": [one_off(address()), one_off(address(), **template)]}
    response = await api.send(body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, f"messages.1.template.{field}")


async def test_a_message_needs_a_type_or_a_template_and_not_both(api: Api) -> None:
    await api.add_type()
    neither = await api.send({"to": address(), "data": {}})
    both = await api.send({**one_off(address()), "type": "lead.qualified.alert"})
    for response in (neither, both):
        assert response.status_code == 422
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("missing_message_type", "messages.0.type")


async def test_a_one_off_message_without_to_is_a_422(api: Api) -> None:
    response = await api.send(one_off(None))
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("missing_recipient", "messages.0.to")


async def test_a_one_off_template_follows_its_categorys_suppressions(
    api: Api, fake: FakeResend
) -> None:
    to = address()
    suppressed = await api.client.post(
        api.url("/suppressions"), headers=api.headers, json={"email": to, "reason": "unsubscribed"}
    )
    assert suppressed.status_code == 201, suppressed.text
    receipt = (await api.send(one_off(to))).json()["ids"][0]
    digest = (await api.send(one_off(to, category="marketing"))).json()["ids"][0]

    assert (await api.settled(receipt))["status"] == "sent"
    assert (await api.settled(digest))["status"] == "suppressed"
    assert len(fake.messages_to(to)) == 1


async def test_the_same_one_off_template_sends_the_sponsors_name_as_it_is_now(
    api: Api, fake: FakeResend, admin: dict[str, str]
) -> None:
    template = {"subject": "From {{ sponsor.name }}", "html_body": "<p>Hello</p>"}
    first, second = address(), address()
    (before,) = (await api.send({"to": first, "template": template})).json()["ids"]
    assert (await api.settled(before))["status"] == "sent"
    renamed = await api.client.put(
        f"/api/v1/sponsors/{api.sponsor}",
        headers=admin,
        json={"name": "Renamed Ltd", "from_email": "news@sponsor.example"},
    )
    assert renamed.status_code == 200, renamed.text
    (after,) = (await api.send({"to": second, "template": template})).json()["ids"]
    assert (await api.settled(after))["status"] == "sent"

    assert [m.subject for m in fake.messages_to(first)] == ["From Test Sponsor"]
    assert [m.subject for m in fake.messages_to(second)] == ["From Renamed Ltd"]
