"""Copies of a message (cc, bcc) through the API, to the fake Resend."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import orjson
import pytest

from schemas.messages import MessageIn
from service.messages.logic import body_hash
from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from tests.messages.test_messages import Api, alert

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


async def test_cc_and_bcc_are_sent_with_the_message_and_shown_in_its_status(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type()
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    body = alert(to)
    # The recipient and a repeat are dropped from the copies: one copy per address.
    body["cc"] = ["Boss@Acme.example", to, "boss@acme.example"]
    body["bcc"] = ["archive@acme.example", "boss@acme.example"]
    response = await api.send(body)
    assert response.status_code == 202, response.text
    (message_id,) = response.json()["ids"]

    status = await api.settled(message_id)
    assert status["status"] == "sent", status
    assert (status["cc"], status["bcc"]) == (["boss@acme.example"], ["archive@acme.example"])
    (sent,) = fake.messages_to(to)
    assert (sent.cc, sent.bcc) == (["boss@acme.example"], ["archive@acme.example"])


async def test_a_copy_that_is_not_an_address_is_a_422_naming_it(api: Api) -> None:
    await api.add_type()
    body = {"messages": [alert("a@customer.example"), alert("b@customer.example")]}
    body["messages"][1]["bcc"] = ["ok@acme.example", "not an address"]
    response = await api.send(body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_email", "messages.1.bcc.1")


async def test_more_than_fifty_copies_are_refused(api: Api) -> None:
    await api.add_type()
    body = alert("a@customer.example")
    body["cc"] = [f"c{i}@acme.example" for i in range(51)]
    response = await api.send(body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_a_suppressed_copy_is_left_out_and_the_message_still_goes(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type(key="order.receipt", category="transactional")
    to, bounced = (f"{uuid.uuid4().hex[:8]}@customer.example" for _ in range(2))
    suppressed = await api.client.post(
        api.url("/suppressions"),
        headers=api.headers,
        json={"email": bounced, "reason": "hard_bounce"},
    )
    assert suppressed.status_code == 201, suppressed.text
    body = {"type": "order.receipt", "to": to, "data": {"lead_name": "Ada"}}
    body["cc"] = [bounced, "boss@acme.example"]
    response = await api.send(body)

    assert (await api.settled(response.json()["ids"][0]))["status"] == "sent"
    (sent,) = fake.messages_to(to)
    assert sent.cc == ["boss@acme.example"]


def test_a_request_without_the_newer_fields_hashes_as_before_they_existed() -> None:
    # The digest stored for an Idempotency-Key before cc, bcc, send_at and template.
    before: dict[str, Any] = {
        "type": "lead.qualified.alert",
        "to": "a@customer.example",
        "data": {"lead_name": "Ada"},
        "reply_to": None,
        "attachments": [],
        "tags": {},
    }
    digest = hashlib.sha256(orjson.dumps([before], option=orjson.OPT_SORT_KEYS)).digest()
    assert body_hash([MessageIn.model_validate(before)]) == digest
    with_copy = MessageIn.model_validate({**before, "cc": ["b@customer.example"]})
    assert body_hash([with_copy]) != digest
