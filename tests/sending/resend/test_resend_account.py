"""The Resend adapter against the fake, as Resend documents it: ``from`` names,
account errors, sending-only keys and the limits of template variables."""

from __future__ import annotations

import uuid
from email.utils import formataddr
from typing import Any

import pytest

from service.errors import AccountError, PermanentProviderError
from tests.fakes.resend_server import MAX_TEMPLATE_VALUE, FakeResend
from tests.sending.resend.test_resend_provider import call, published_template, template_email
from worker.providers.base import OutgoingEmail
from worker.providers.resend import ResendProvider
from worker.providers.resend_request import resend_from

API_KEY = "re_test_key"


def email(delivery_id: int = 1, **fields: Any) -> OutgoingEmail:
    values: dict[str, Any] = {
        "sender": "news@acme.example",
        "html": "<p>Hi</p>",
        "text": "Hi",
        **fields,
    }
    return OutgoingEmail(
        delivery_id=delivery_id,
        campaign_id=str(uuid.uuid4()),
        to=f"user{delivery_id}@example.com",
        subject="Hello",
        **values,
    )


@pytest.mark.parametrize("name", ["Café Müller", "Acme, Inc.", "Dr. O'Brien (Sales)"])
async def test_a_sender_name_is_sent_as_resend_documents_it(
    fake: FakeResend, provider: ResendProvider, name: str
) -> None:
    sent = email(
        sender=formataddr((name, "news@acme.example")),  # what SMTP sends
        sender_name=name,
        sender_address="news@acme.example",
    )
    (result,) = await provider.send_batch([sent], "from-name")
    assert result.provider_message_id
    (message,) = fake.messages
    assert message.sender == f"{name} <news@acme.example>"


@pytest.mark.parametrize(
    "sender",
    [
        formataddr(("Café Müller", "news@acme.example")),  # an RFC 2047 encoded word
        formataddr(("Acme, Inc.", "news@acme.example")),  # a quoted string
    ],
)
async def test_the_fake_refuses_a_display_name_encoded_or_quoted(
    fake: FakeResend, sender: str
) -> None:
    body = {"from": sender, "to": "x@example.com", "subject": "s", "text": "t"}
    refused = await call(fake, "POST", "/emails", body)
    assert refused.status_code == 422
    assert "Invalid `from` field" in refused.json()["message"]
    assert fake.messages == []


@pytest.mark.parametrize("name", ["Café Müller", "Acme, Inc."])
async def test_a_sender_given_only_in_rfc5322_form_is_sent_as_resend_documents_it(
    fake: FakeResend, provider: ResendProvider, name: str
) -> None:
    sent = email(sender=formataddr((name, "news@acme.example")))
    (result,) = await provider.send_batch([sent], "rfc5322-only")
    assert result.provider_message_id
    assert fake.messages[0].sender == f"{name} <news@acme.example>"


def test_a_sender_name_loses_brackets_quotes_and_line_breaks() -> None:
    cleaned = resend_from('"Acme" <Sales>\r\nBcc: x', "a@b.example")
    assert cleaned == "Acme Sales Bcc: x <a@b.example>"
    assert resend_from(' "" ', "a@b.example") == "a@b.example"


async def test_an_invalid_key_is_an_account_error(fake: FakeResend) -> None:
    adapter = ResendProvider("not-a-resend-key", fake.url, timeout=5.0)
    try:
        with pytest.raises(AccountError) as caught:
            await adapter.send_batch([email()], "bad-key")
    finally:
        await adapter.aclose()
    assert (caught.value.status, caught.value.code) == (403, "invalid_api_key")


async def test_an_unverified_sending_domain_is_an_account_error(
    fake: FakeResend, provider: ResendProvider
) -> None:
    fake.set_verified_domains({"verified.example"})
    with pytest.raises(AccountError) as caught:
        await provider.send_batch([email(), email(2)], "unverified")
    assert caught.value.status == 403 and "not verified" in caught.value.message
    assert fake.messages == []


@pytest.mark.parametrize(
    ("status", "name"),
    [(401, "restricted_api_key"), (403, "suspended_api_key"), (422, "invalid_from_address")],
)
async def test_a_key_or_sender_the_account_refuses_is_an_account_error(
    fake: FakeResend, provider: ResendProvider, status: int, name: str
) -> None:
    fake.fail_next(1, status=status, error_name=name)
    with pytest.raises(AccountError) as caught:
        await provider.send_batch([email()], f"account-{name}")
    assert caught.value.code == name


async def test_a_refused_email_is_not_an_account_error(
    fake: FakeResend, provider: ResendProvider
) -> None:
    fake.fail_next(1, status=422, error_name="validation_error")
    with pytest.raises(PermanentProviderError) as caught:
        await provider.send_batch([email()], "refused")
    assert not isinstance(caught.value, AccountError)


async def test_a_sending_only_key_is_detected_once_and_no_template_request_follows(
    fake: FakeResend, provider: ResendProvider
) -> None:
    fake.set_restricted_key(True)
    with pytest.raises(AccountError) as first:
        await provider.create_template("campaign a", "<p>{{{H0}}}</p>", "{{{T0}}}", ["H0", "T0"])
    assert first.value.code == "restricted_api_key"
    with pytest.raises(AccountError):
        await provider.create_template("campaign b", "<p>{{{H0}}}</p>", "{{{T0}}}", ["H0", "T0"])
    assert [r.path for r in fake.requests] == ["/templates"]
    # Sending still works with that key.
    (result,) = await provider.send_batch([email()], "restricted-send")
    assert result.provider_message_id


async def test_the_fake_refuses_a_template_value_longer_than_resend_allows(
    fake: FakeResend, provider: ResendProvider
) -> None:
    template_id = await published_template(fake)
    at_limit = await call(
        fake, "POST", "/emails", template_email(template_id, NAME="x" * MAX_TEMPLATE_VALUE)
    )
    assert at_limit.status_code == 200, at_limit.text
    over = await call(
        fake, "POST", "/emails", template_email(template_id, NAME="x" * (MAX_TEMPLATE_VALUE + 1))
    )
    assert over.status_code == 422
    assert over.json()["name"] == "validation_error"
