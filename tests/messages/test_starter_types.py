"""Starter message types: each passes the validator a sponsor's type passes, renders
well with its sample data, and installs as the sponsor's own, editable type."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from schemas.messages import MessageTypeIn
from service.messages import starter, types
from service.messages.logic import checked_data
from service.models import MessageType
from service.templates.compiled import compile_message
from service.templates.content import Brand
from service.templates.urls import DeliveryUrls
from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from tests.messages.test_messages import Api

# A one-to-one message has no unsubscribe page and tracks nothing.
URLS = DeliveryUrls(open_pixel="", unsubscribe="", view_in_browser="", links=[])
BRAND = Brand(sponsor={"id": "sp", "name": "Acme", "from_name": "Acme", "postal_address": "1 St"})


def render(
    body: MessageTypeIn, data: dict[str, Any], preferences: dict[str, Any] | None = None
) -> tuple[str, str, str]:
    """Subject, HTML and text of ``body`` for ``data`` (and the recipient's
    ``preferences``, as the sender passes them), checked as a message's data is."""
    row = MessageType(key=body.key, variables=[v.model_dump(mode="json") for v in body.variables])
    fields: dict[str, Any] = {
        "email": "ada@customer.example",
        "attributes": checked_data(row, data, "data"),
    }
    if preferences is not None:
        fields["preferences"] = preferences
    compiled = compile_message(types.content_of(body), BRAND, tracking=False)
    rendered = compiled.render(fields, URLS)
    return rendered.subject, rendered.html, rendered.text


def starter_type(key: str, team: tuple[str, ...] = ()) -> MessageTypeIn:
    (found,) = [t for t in starter.catalogue(team) if t.key == key]
    return found


# What each must show with its sample data: the subject, and words of the body.
EXPECTED = {
    "conversation.summary.customer": (
        "Summary of our conversation",
        ["Hi Ada,", "Business plan", "Key points", "SSO for 40 seats", "Next steps"],
    ),
    "conversation.summary.team": (
        "Conversation with Ada Lovelace (score 87)",
        ["87/100", "ada@customer.example", "Key points", "proposal by Friday"],
    ),
    "order.confirmation": (
        "Your order A-1042 is confirmed",
        ["Analytical Engine", "Punch cards (box)", "€1,080.00", "View your order"],
    ),
    "payment.receipt": ("Your receipt from Acme", ["€49.00", "R-2026-0042", "Visa ending 4242"]),
    "payment.failed": (
        "Your payment of €49.00 did not go through",
        ["insufficient funds", 'href="https://billing.example.com/retry/abc"', "Retry"],
    ),
    "cancellation.confirmation": (
        "Your cancellation is confirmed",
        ["your Business plan", "31 December 2026", "€12.00", "https://app.example.com/plans"],
    ),
}


def test_every_starter_type_has_sample_data_and_an_expectation() -> None:
    assert set(starter.KEYS) == set(starter.SAMPLES) == set(EXPECTED)


@pytest.mark.parametrize("key", starter.KEYS)
async def test_a_starter_type_passes_the_validator_and_renders_its_sample(key: str) -> None:
    body = starter_type(key, ("sales@acme.example",))
    await types.check(body)  # the validator every sponsor's type goes through

    subject, html, text = render(body, starter.SAMPLES[key])
    wanted_subject, words = EXPECTED[key]
    assert subject == wanted_subject
    for word in words:
        assert word in html, word
    assert "Acme" in html and "{{" not in html and "{{" not in text
    assert text.strip()


@pytest.mark.parametrize("key", starter.KEYS)
def test_a_starter_type_renders_with_its_required_data_alone(key: str) -> None:
    body = starter_type(key)
    required = {v.name for v in body.variables if v.required}
    _, html, _ = render(body, {k: v for k, v in starter.SAMPLES[key].items() if k in required})
    assert "None" not in html
    # An optional part left out takes its label with it.
    for empty in ("<td></td>", "<strong></strong>", "<li></li>", 'href=""></a>'):
        assert empty not in html.split('class="footer"')[0], empty


def test_a_receipt_without_its_optional_details_shows_none_of_their_labels() -> None:
    body = starter_type("payment.receipt")
    _, html, _ = render(body, {"amount": "€49.00", "receipt_number": "R-1"})
    assert "R-1" in html
    for label in ("Date:", "For:", "Paid with:", "Download your receipt"):
        assert label not in html


@pytest.mark.parametrize("key", ["conversation.summary.customer", "conversation.summary.team"])
def test_a_conversation_summary_in_brief_format_leaves_out_key_points_and_next_steps(
    key: str,
) -> None:
    body = starter_type(key)
    _, brief, _ = render(body, {**starter.SAMPLES[key], "format": "brief"})
    _, detailed, _ = render(body, {**starter.SAMPLES[key], "format": "detailed"})
    summary = starter.SAMPLES[key]["summary"]
    assert summary in brief and summary in detailed
    assert "Key points" not in brief and "Next steps" not in brief
    assert "Key points" in detailed and "Next steps" in detailed


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


async def install(api: Api, **body: Any) -> httpx.Response:
    return await api.client.post(api.url("/message-types/starter"), headers=api.headers, json=body)


@pytest.mark.usefixtures("workers")
async def test_installed_starter_types_are_the_sponsors_own_and_send(
    api: Api, fake: FakeResend
) -> None:
    response = await install(api, team=["Sales@Acme.example"])
    assert response.status_code == 201, response.text
    installed = {t["key"]: t for t in response.json()}
    assert set(installed) == set(starter.KEYS)
    assert installed["conversation.summary.team"]["default_recipients"] == ["sales@acme.example"]

    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    body = {"type": "payment.failed", "to": to, "data": starter.SAMPLES["payment.failed"]}
    (message_id,) = (await api.send(body)).json()["ids"]
    assert (await api.settled(message_id))["status"] == "sent"
    (sent,) = fake.messages_to(to)
    assert sent.subject == "Your payment of €49.00 did not go through"
    assert "https://billing.example.com/retry/abc" in (sent.html or "")


async def test_installing_again_keeps_the_sponsors_edits(api: Api) -> None:
    (first,) = (await install(api, keys=["order.confirmation"])).json()
    edited = {**starter_type("order.confirmation").model_dump(), "subject": "Order received"}
    put = await api.client.put(
        api.url(f"/message-types/{first['id']}"), headers=api.headers, json=edited
    )
    assert put.status_code == 200, put.text

    again = await install(api, keys=["order.confirmation", "payment.receipt"])
    assert again.status_code == 201
    by_key = {t["key"]: t for t in again.json()}
    assert by_key["order.confirmation"]["id"] == first["id"]
    assert by_key["order.confirmation"]["subject"] == "Order received"
    assert "payment.receipt" in by_key


async def test_an_unknown_starter_key_is_a_422_naming_it(api: Api) -> None:
    response = await install(api, keys=["order.confirmation", "no.such.starter"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("unknown_message_type", "keys.1")


def test_a_conversation_summary_without_a_format_follows_the_recipients_preference() -> None:
    body = starter_type("conversation.summary.customer")
    assert body.preference_category == "summaries"
    sample = starter.SAMPLES["conversation.summary.customer"]
    brief = render(body, sample, preferences={"format": "brief"})[1]
    detailed = render(body, sample, preferences={"format": "detailed"})[1]
    given = render(body, {**sample, "format": "detailed"}, preferences={"format": "brief"})[1]
    assert "Key points" not in brief
    assert "Key points" in detailed and "Key points" in given
