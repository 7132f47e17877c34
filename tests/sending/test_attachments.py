"""Attachments: every provider sends them as its API says (checked by its fake), and
``check_attachments`` refuses what a provider would refuse, with a stable 422 code."""

from __future__ import annotations

import base64
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.messages import AttachmentIn
from service.errors import Unprocessable
from service.messages.attachments import MESSAGE_LIMITS, Attachment, check_attachments
from tests.fakes.mailgun_server import FakeMailgun
from tests.fakes.resend_server import FakeResend
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.fakes.smtp_server import FakeSMTP, parse_email
from worker.providers.base import OutgoingEmail
from worker.providers.mailgun import MailgunProvider
from worker.providers.outbox import OutboxProvider
from worker.providers.resend import ResendProvider
from worker.providers.resend_request import single_key
from worker.providers.sendgrid import SendGridProvider
from worker.providers.smtp import SMTPProvider

CAMPAIGN = str(uuid.UUID(int=21))
# Bytes a text encoding would break: NUL, CR/LF, high bytes, a would-be boundary.
PDF = b"%PDF-1.4\r\n%\xe2\xe3\xcf\xd3\r\n1 0 obj\x00\xff\n--boundary\n" * 50 + b"%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
INVOICE = Attachment("invoice 2026-12.pdf", "application/pdf", PDF)
LOGO = Attachment("logo.png", "image/png", PNG, content_id="logo")
HTML = '<p>Your invoice</p><img src="cid:logo" alt="Acme">'


def outgoing(i: int, *attachments: Attachment, **overrides: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "delivery_id": 3000 + i,
        "campaign_id": CAMPAIGN,
        "sender": "Acme Billing <billing@acme.example>",
        "to": f"customer{i}@example.org",
        "subject": f"Invoice {i}",
        "html": HTML,
        "text": "Your invoice is attached.",
        "attachments": attachments,
    }
    fields.update(overrides)
    return OutgoingEmail(**fields)


def assert_mime_carries_both(message: EmailMessage) -> None:
    """A PDF as an attachment, and the logo inline beside the HTML that shows it."""
    assert message.get_content_type() == "multipart/mixed"
    html = message.get_body(("html",))
    assert html is not None and 'src="cid:logo"' in html.get_content()
    (inline,) = [p for p in message.walk() if p.get_content_disposition() == "inline"]
    assert inline["Content-ID"] == "<logo>"
    assert inline.get_content_type() == "image/png"
    assert inline.get_content() == PNG
    # The logo sits in the multipart/related part that holds the HTML.
    related = next(p for p in message.walk() if p.get_content_type() == "multipart/related")
    assert inline in list(related.iter_parts())
    (attached,) = list(message.iter_attachments())
    assert attached.get_filename() == INVOICE.filename
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_content() == PDF


# ------------------------------------------------------------------ Resend


def decoded(attachments: list[dict[str, Any]]) -> list[tuple[str, str, bytes, str | None]]:
    return [
        (a["filename"], a["content_type"], base64.b64decode(a["content"]), a.get("content_id"))
        for a in attachments
    ]


async def test_resend_sends_an_email_with_attachments_through_the_single_endpoint(
    resend_fake: FakeResend, resend: ResendProvider
) -> None:
    (result,) = await resend.send_batch([outgoing(1, INVOICE, LOGO)], "key-1")

    (message,) = resend_fake.messages
    assert message.path == "/emails"
    assert result.provider_message_id == message.id
    assert message.idempotency_key == single_key("key-1", 3001)
    assert decoded(message.attachments) == [
        ("invoice 2026-12.pdf", "application/pdf", PDF, None),
        ("logo.png", "image/png", PNG, "logo"),
    ]
    assert message.tag("delivery_id") == "3001"


async def test_resend_a_batch_mixing_emails_with_and_without_attachments_sends_each_once(
    resend_fake: FakeResend, resend: ResendProvider
) -> None:
    emails = [outgoing(1), outgoing(2, INVOICE), outgoing(3), outgoing(4, LOGO)]

    first = await resend.send_batch(emails, "mixed")
    again = await resend.send_batch(emails, "mixed")  # a retry of the batch

    assert [r.delivery_id for r in first] == [3001, 3002, 3003, 3004]
    assert [r.provider_message_id for r in again] == [r.provider_message_id for r in first]
    by_to = {m.to[0]: m for m in resend_fake.messages}
    assert len(resend_fake.messages) == 4  # the retry was replayed, not sent again
    assert [by_to[e.to].id for e in emails] == [r.provider_message_id for r in first]
    assert [by_to[e.to].path for e in emails] == ["/emails/batch", "/emails"] * 2
    assert by_to["customer1@example.org"].attachments == []
    assert resend_fake.replays == 3  # the batch and both single emails


async def test_resend_an_attached_email_it_refuses_is_that_emails_error_and_the_next_goes(
    resend_fake: FakeResend, resend: ResendProvider
) -> None:
    resend_fake.fail_next(1, 422, error_name="invalid_attachment")

    refused, sent = await resend.send_batch([outgoing(1, INVOICE), outgoing(2, INVOICE)], "refused")

    assert refused.error is not None and "invalid_attachment" in refused.error
    assert sent.provider_message_id == resend_fake.messages[0].id


def resend_body(**extra: Any) -> dict[str, Any]:
    body = {"from": "a@acme.example", "to": "b@example.org", "subject": "s", "html": "<p>x</p>"}
    return {**body, **extra}


async def test_the_resend_fake_refuses_attachments_on_the_batch_endpoint_as_resend_does(
    resend_fake: FakeResend,
) -> None:
    attachment = {"filename": "a.pdf", "content": base64.b64encode(PDF).decode()}
    async with httpx.AsyncClient(headers={"Authorization": "Bearer re_test"}) as client:
        batch = await client.post(
            f"{resend_fake.url}/emails/batch", json=[resend_body(attachments=[attachment])]
        )
        no_content = await client.post(
            f"{resend_fake.url}/emails", json=resend_body(attachments=[{"filename": "a.pdf"}])
        )
        not_a_string = await client.post(
            f"{resend_fake.url}/emails",
            json=resend_body(attachments=[{"filename": "a.pdf", "content": 3}]),
        )

    assert batch.status_code == 422
    assert "`attachments` field is not supported" in batch.json()["message"]
    assert (no_content.status_code, no_content.json()["name"]) == (422, "invalid_attachment")
    assert not_a_string.status_code == 422  # the spec's Attachment schema: content is a string
    assert resend_fake.messages == []


# ------------------------------------------------------------------ SMTP and the outbox


@pytest.mark.parametrize("text", ["Your invoice is attached.", ""])
async def test_smtp_sends_attachments_as_mime_that_parses_back_to_the_same_files(
    smtp_server: FakeSMTP, text: str
) -> None:
    smtp_server.reset()
    provider = SMTPProvider("127.0.0.1", smtp_server.port, tls="none", message_id_domain="m.test")
    try:
        (result,) = await provider.send_batch([outgoing(1, INVOICE, LOGO, text=text)], "smtp")
    finally:
        await provider.aclose()

    assert result.error is None
    (received,) = smtp_server.messages
    message = parse_email(received.data)
    assert_mime_carries_both(message)
    plain = message.get_body(("plain",))
    assert (plain.get_content().strip() if plain else "") == text


async def test_smtp_keeps_a_long_non_ascii_file_name_within_smtp_line_limits(
    smtp_server: FakeSMTP,
) -> None:
    smtp_server.reset()
    name = "Rechnung für März — " + "sehr lang " * 20 + ".pdf"
    provider = SMTPProvider("127.0.0.1", smtp_server.port, tls="none", message_id_domain="m.test")
    try:
        await provider.send_batch([outgoing(1, Attachment(name, "application/pdf", PDF))], "k")
    finally:
        await provider.aclose()

    data = smtp_server.messages[0].data
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    (attached,) = list(parse_email(data).iter_attachments())
    assert (attached.get_filename(), attached.get_content()) == (name, PDF)


async def test_an_email_without_attachments_goes_over_smtp_exactly_as_before(
    smtp_server: FakeSMTP,
) -> None:
    smtp_server.reset()
    provider = SMTPProvider("127.0.0.1", smtp_server.port, tls="none", message_id_domain="m.test")
    try:
        await provider.send_batch([outgoing(1)], "plain")
    finally:
        await provider.aclose()

    message = parse_email(smtp_server.messages[0].data)
    assert message.get_content_type() == "multipart/alternative"


async def test_the_outbox_writes_attachments_into_the_eml_file(tmp_path: Path) -> None:
    await OutboxProvider(tmp_path).send_batch([outgoing(1, INVOICE, LOGO)], "outbox")

    message = parse_email((tmp_path / CAMPAIGN / "3001.eml").read_bytes())
    assert_mime_carries_both(message)


# ------------------------------------------------------------------ Mailgun


async def test_mailgun_sends_attachments_and_inline_files_as_file_parts(
    mailgun_fake: FakeMailgun, mailgun: MailgunProvider
) -> None:
    await mailgun.send_batch([outgoing(1, INVOICE, LOGO)], "mg")

    (message,) = mailgun_fake.messages_to("customer1@example.org")
    files = [(f.name, f.filename, f.content_type, f.content) for f in message.attachments]
    # Mailgun names an inline file's Content-ID after its file name: the content id.
    assert files == [
        ("attachment", "invoice 2026-12.pdf", "application/pdf", PDF),
        ("inline", "logo", "image/png", PNG),
    ]
    assert message.html == HTML


async def test_mailgun_a_batch_mixing_emails_with_and_without_attachments_sends_each_once(
    mailgun_fake: FakeMailgun, mailgun: MailgunProvider
) -> None:
    emails = [outgoing(1), outgoing(2, INVOICE), outgoing(3), outgoing(4, INVOICE)]

    results = await mailgun.send_batch(emails, "mg-mixed")

    assert [r.delivery_id for r in results] == [3001, 3002, 3003, 3004]
    assert sorted(m.to for m in mailgun_fake.messages) == sorted(e.to for e in emails)
    files = {m.to: [f.content for f in m.attachments] for m in mailgun_fake.messages}
    assert files == {
        "customer1@example.org": [],
        "customer2@example.org": [PDF],
        "customer3@example.org": [],
        "customer4@example.org": [PDF],
    }
    # Equal attachments share a request, as the messages without any do.
    assert sorted(r.recipients for r in mailgun_fake.requests) == [2, 2]


async def test_the_mailgun_fake_takes_files_only_as_attachment_or_inline_file_parts(
    mailgun_fake: FakeMailgun,
) -> None:
    form = {"from": "a@acme.example", "to": "b@example.org", "subject": "s", "text": "x"}
    url = f"{mailgun_fake.url}/v3/mg.acme.example/messages"
    async with httpx.AsyncClient(auth=("api", "key-test")) as client:
        as_text = await client.post(
            url, data={**form, "attachment": "not a file"}, files={"inline": ("logo", b"x")}
        )
        elsewhere = await client.post(url, data=form, files={"o:tag": ("x.txt", b"x")})
        as_file = await client.post(url, data=form, files={"attachment": ("x.txt", b"x")})

    assert as_text.status_code == 400
    assert "must be a file part" in as_text.json()["message"]
    assert elsewhere.status_code == 400
    assert "not a file parameter" in elsewhere.json()["message"]
    assert as_file.status_code == 200


# ------------------------------------------------------------------ SendGrid


def sendgrid_files(attachments: list[dict[str, str]]) -> list[tuple[Any, ...]]:
    return [
        (
            a["filename"],
            a["type"],
            base64.b64decode(a["content"]),
            a["disposition"],
            a.get("content_id"),
        )
        for a in attachments
    ]


async def test_sendgrid_sends_attachments_with_their_disposition_and_content_id(
    sendgrid_fake: FakeSendGrid, sendgrid: SendGridProvider
) -> None:
    await sendgrid.send_batch([outgoing(1, INVOICE, LOGO)], "sg")

    (message,) = sendgrid_fake.messages_to("customer1@example.org")
    assert sendgrid_files(message.attachments) == [
        ("invoice 2026-12.pdf", "application/pdf", PDF, "attachment", None),
        ("logo.png", "image/png", PNG, "inline", "logo"),
    ]


async def test_sendgrid_a_templated_batch_with_one_attached_email_sends_each_once_filled_in(
    sendgrid_fake: FakeSendGrid, sendgrid: SendGridProvider
) -> None:
    template = sendgrid.adopt_template("<p>Hi {{{H0}}}</p>", "Hi {{{T0}}}", ["H0", "T0"])

    def templated(i: int, *attachments: Attachment) -> OutgoingEmail:
        variables: dict[str, str | int] = {"H0": f"reader {i}", "T0": f"reader {i}"}
        return outgoing(
            i, *attachments, html="", text="", template_id=template, variables=variables
        )

    emails = [templated(1), templated(2, INVOICE), templated(3)]
    results = await sendgrid.send_batch(emails, "sg-mixed")

    assert all(r.error is None for r in results)
    messages = {m.to: m for m in sendgrid_fake.messages}
    assert sorted(messages) == sorted(e.to for e in emails)
    attached = messages["customer2@example.org"]
    assert attached.html == "<p>Hi reader 2</p>"
    assert [a[2] for a in sendgrid_files(attached.attachments)] == [PDF]
    assert messages["customer1@example.org"].attachments == []
    assert len(sendgrid_fake.requests) == 2  # the two without files still share one


# ------------------------------------------------------------------ the contract and limits


def attachment_in(**overrides: Any) -> AttachmentIn:
    fields: dict[str, Any] = {
        "filename": "invoice.pdf",
        "content_type": "application/pdf",
        "content": base64.b64encode(PDF).decode(),
    }
    fields.update(overrides)
    return AttachmentIn(**fields)


def test_valid_attachments_come_back_decoded_for_the_provider() -> None:
    found = check_attachments(
        [attachment_in(), attachment_in(filename="logo.png", content_type="image/png",
                                        content=base64.b64encode(PNG).decode(),
                                        content_id="logo")],
        "resend",
    )  # fmt: skip

    assert found == (
        Attachment("invoice.pdf", "application/pdf", PDF),
        Attachment("logo.png", "image/png", PNG, "logo"),
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"filename": "../etc/passwd"}, "filename"),
        ({"filename": "C:\\invoice.pdf"}, "filename"),
        ({"filename": "invoice\r\nBcc: x@evil.example.pdf"}, "filename"),
        ({"filename": "a;b.pdf"}, "filename"),
        ({"filename": ".."}, "filename"),
        ({"filename": ""}, "filename"),
        ({"filename": "a" * 252 + ".pdf"}, "filename"),
        ({"content_type": "pdf"}, "content_type"),
        ({"content_type": "application/pdf; name=x"}, "content_type"),
        ({"content": "not base64!"}, "content"),
        ({"content": ""}, "content"),
        ({"content_id": "<logo>"}, "content_id"),
    ],
)
def test_an_attachment_that_cannot_be_sent_is_a_422_naming_its_field(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(Unprocessable) as refused:
        check_attachments([attachment_in(), attachment_in(**overrides)], "smtp")

    assert refused.value.status_code == 422
    assert refused.value.code == "invalid_attachment"
    assert refused.value.field == f"attachments.1.{field}"


def test_two_inline_files_with_one_content_id_are_refused() -> None:
    logo = attachment_in(content_id="logo")
    with pytest.raises(Unprocessable) as refused:
        check_attachments([logo, logo], "resend")
    assert (refused.value.code, refused.value.field) == (
        "invalid_attachment",
        "attachments.1.content_id",
    )


@pytest.mark.parametrize(
    ("provider", "limit"),
    [("resend", 40_000_000), ("mailgun", 25_000_000), ("sendgrid", 29_999_999)],
)
def test_a_message_over_its_providers_limit_after_base64_is_attachment_too_large(
    provider: str, limit: int
) -> None:
    assert MESSAGE_LIMITS[provider] == limit
    pdf = [attachment_in()]
    encoded = len(base64.b64encode(PDF))

    check_attachments(pdf, provider, body_bytes=limit - encoded)  # exactly at the limit
    with pytest.raises(Unprocessable) as refused:
        check_attachments(pdf, provider, body_bytes=limit - encoded + 1)

    assert refused.value.status_code == 422
    assert refused.value.to_dict() == {
        "error": {
            "code": "attachment_too_large",
            "message": refused.value.message,
            "field": "attachments",
        }
    }


def test_a_real_file_over_the_limit_is_refused_by_its_own_size() -> None:
    big = base64.b64encode(bytes(19 * 10**6)).decode()  # 25.3 MB as base64
    with pytest.raises(Unprocessable) as refused:
        check_attachments([attachment_in(content=big)], "mailgun")
    assert refused.value.code == "attachment_too_large"
    assert check_attachments([attachment_in(content=big)], "resend")


def test_smtp_and_the_outbox_leave_the_size_to_the_server() -> None:
    assert check_attachments([attachment_in()], "smtp", body_bytes=10**9)
    assert check_attachments([attachment_in()], "outbox", body_bytes=10**9)
