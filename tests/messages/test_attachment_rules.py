"""A message type's attachment rules: what its messages may attach, on top of the
provider's limits; a message that breaks them is a 422 naming the attachments, and
nothing is queued."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import TokenFactory
from tests.messages.test_message_types import message_type
from tests.messages.test_messages import Api, alert

PDF = base64.b64encode(b"%PDF-1.4 invoice").decode()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()


def attachment(filename: str, content_type: str, content: str) -> dict[str, str]:
    return {"filename": filename, "content_type": content_type, "content": content}


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


def with_attachments(*attachments: dict[str, str]) -> dict[str, Any]:
    return {**alert(f"{uuid.uuid4().hex[:8]}@customer.example"), "attachments": list(attachments)}


async def refusal(api: Api, *attachments: dict[str, str]) -> dict[str, Any]:
    response = await api.send(with_attachments(*attachments))
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_a_type_that_takes_no_attachment_refuses_one(api: Api) -> None:
    made = await api.add_type(attachment_rules={"allowed": False})
    assert made["attachment_rules"]["allowed"] is False

    error = await refusal(api, attachment("invoice.pdf", "application/pdf", PDF))
    assert (error["code"], error["field"]) == ("attachment_not_allowed", "messages.0.attachments")


async def test_a_type_takes_only_the_content_types_it_names(api: Api) -> None:
    await api.add_type(attachment_rules={"content_types": ["application/pdf"]})
    error = await refusal(
        api,
        attachment("invoice.pdf", "application/pdf", PDF),
        attachment("logo.png", "image/png", PNG),
    )
    assert (error["code"], error["field"]) == (
        "attachment_not_allowed",
        "messages.0.attachments.1.content_type",
    )

    body = {
        **alert("ok@customer.example"),
        "attachments": [attachment("i.pdf", "Application/PDF", PDF)],
    }
    assert (await api.send(body)).status_code == 202


async def test_a_whole_top_level_type_is_allowed_with_a_star(api: Api) -> None:
    await api.add_type(attachment_rules={"content_types": ["image/*"]})
    body = {
        **alert("ok@customer.example"),
        "attachments": [attachment("logo.png", "image/png", PNG)],
    }
    assert (await api.send(body)).status_code == 202
    error = await refusal(api, attachment("invoice.pdf", "application/pdf", PDF))
    assert error["code"] == "attachment_not_allowed"


async def test_a_type_bounds_the_count_and_the_bytes_of_attachments(api: Api) -> None:
    await api.add_type(attachment_rules={"max_count": 1, "max_bytes": 20})
    two = await refusal(
        api,
        attachment("a.pdf", "application/pdf", PDF),
        attachment("b.pdf", "application/pdf", PDF),
    )
    assert "at most 1" in two["message"]
    big = await refusal(api, attachment("big.png", "image/png", PNG))
    assert "bytes" in big["message"]


async def test_a_rule_that_is_not_a_mime_type_is_refused_at_save(api: Api) -> None:
    response = await api.client.post(
        api.url("/message-types"),
        headers=api.headers,
        json=message_type(attachment_rules={"content_types": ["pdf"]}),
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith("attachment_rules.content_types")
