"""Copies (cc and bcc): every provider sends them as its API says (checked by its fake),
and a blind copy never shows in a header a recipient can read."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from service.messages.attachments import Attachment
from tests.fakes.mailgun_server import FakeMailgun
from tests.fakes.resend_server import FakeResend
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.fakes.smtp_server import FakeSMTP, parse_email
from worker.providers.base import OutgoingEmail
from worker.providers.mailgun import MailgunProvider
from worker.providers.outbox import OutboxProvider
from worker.providers.resend import ResendProvider
from worker.providers.sendgrid import SendGridProvider
from worker.providers.smtp import SMTPProvider

CAMPAIGN = str(uuid.UUID(int=22))
CC = ("accounts@acme.example", "boss@acme.example")
BCC = ("archive@acme.example",)


def outgoing(i: int, **overrides: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "delivery_id": 4000 + i,
        "campaign_id": CAMPAIGN,
        "sender": "Acme Billing <billing@acme.example>",
        "to": f"customer{i}@example.org",
        "subject": f"Receipt {i}",
        "html": "<p>Thank you</p>",
        "text": "Thank you",
        "cc": CC,
        "bcc": BCC,
    }
    fields.update(overrides)
    return OutgoingEmail(**fields)


async def test_resend_sends_cc_and_bcc_in_a_batch_beside_an_email_without_copies(
    resend_fake: FakeResend, resend: ResendProvider
) -> None:
    results = await resend.send_batch([outgoing(1), outgoing(2, cc=(), bcc=())], "key-cc")

    assert all(r.provider_message_id for r in results)
    (copied,) = resend_fake.messages_to("customer1@example.org")
    assert (copied.cc, copied.bcc) == (list(CC), list(BCC))
    (plain,) = resend_fake.messages_to("customer2@example.org")
    assert (plain.cc, plain.bcc) == ([], [])


async def test_resend_sends_copies_through_the_single_endpoint_too(
    resend_fake: FakeResend, resend: ResendProvider
) -> None:
    invoice = Attachment("invoice.pdf", "application/pdf", b"%PDF-1.4")
    await resend.send_batch([outgoing(1, attachments=(invoice,))], "key-single")

    (message,) = resend_fake.messages
    assert message.path == "/emails"
    assert (message.cc, message.bcc) == (list(CC), list(BCC))


async def test_smtp_puts_cc_in_a_header_and_bcc_only_on_the_envelope(
    smtp_server: FakeSMTP,
) -> None:
    smtp_server.reset()
    provider = SMTPProvider("127.0.0.1", smtp_server.port, tls="none", message_id_domain="m.test")
    try:
        (result,) = await provider.send_batch([outgoing(1)], "smtp-cc")
    finally:
        await provider.aclose()

    assert result.error is None
    (received,) = smtp_server.messages
    assert received.rcpt_tos == ["customer1@example.org", *CC, *BCC]
    message = parse_email(received.data)
    assert message["Cc"] == ", ".join(CC)
    assert "Bcc" not in message
    assert BCC[0].encode() not in received.data


async def test_smtp_a_refused_copy_does_not_fail_the_message(smtp_server: FakeSMTP) -> None:
    smtp_server.reset()
    smtp_server.reject(BCC[0])
    provider = SMTPProvider("127.0.0.1", smtp_server.port, tls="none", message_id_domain="m.test")
    try:
        (result,) = await provider.send_batch([outgoing(1)], "smtp-refused")
    finally:
        await provider.aclose()
        smtp_server.reset()

    assert result.error is None and result.provider_message_id


async def test_the_outbox_writes_cc_and_keeps_bcc_out_of_the_eml_file(tmp_path: Path) -> None:
    await OutboxProvider(tmp_path).send_batch([outgoing(1)], "outbox")

    raw = (tmp_path / CAMPAIGN / "4001.eml").read_bytes()
    message = parse_email(raw)
    assert message["Cc"] == ", ".join(CC)
    assert "Bcc" not in message
    assert BCC[0].encode() not in raw


async def test_mailgun_sends_an_email_with_copies_in_a_request_of_its_own(
    mailgun_fake: FakeMailgun, mailgun: MailgunProvider
) -> None:
    emails = [outgoing(1), outgoing(2, cc=(), bcc=()), outgoing(3, cc=(), bcc=())]
    results = await mailgun.send_batch(emails, "mg-cc")

    assert all(r.provider_message_id for r in results)
    # The copies would go to every address of a shared request.
    assert sorted(r.recipients for r in mailgun_fake.requests) == [1, 2]
    (copied,) = mailgun_fake.messages_to("customer1@example.org")
    assert (copied.cc, copied.bcc) == (list(CC), list(BCC))
    (plain,) = mailgun_fake.messages_to("customer2@example.org")
    assert (plain.cc, plain.bcc) == ([], [])


async def test_sendgrid_sends_copies_in_the_personalization(
    sendgrid_fake: FakeSendGrid, sendgrid: SendGridProvider
) -> None:
    await sendgrid.send_batch([outgoing(1)], "sg-cc")

    (message,) = sendgrid_fake.messages_to("customer1@example.org")
    assert (message.cc, message.bcc) == (list(CC), list(BCC))


async def test_the_sendgrid_fake_refuses_an_address_twice_in_one_personalization(
    sendgrid_fake: FakeSendGrid, sendgrid: SendGridProvider
) -> None:
    twice = outgoing(1, bcc=("customer1@example.org",))
    (result,) = await sendgrid.send_batch([twice], "sg-twice")

    assert result.error is not None and "unique" in result.error
    assert sendgrid_fake.messages == []
