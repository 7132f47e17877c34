"""The local provider: each message becomes an ``.eml`` file under ``OUTBOX_DIR``.

Files are named by delivery id, so writing a batch twice leaves one file per
recipient (idempotent by construction). Attachments are in the file as a mail
client would receive them: inline ones beside the HTML (``multipart/related``),
the others in ``multipart/mixed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from service.messages.attachments import Attachment
from worker.providers.base import OutgoingEmail, SendResult


class OutboxProvider:
    name = "outbox"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]:
        return await asyncio.to_thread(self._write, emails, idempotency_key)

    def _write(self, emails: Sequence[OutgoingEmail], idempotency_key: str) -> list[SendResult]:
        results = []
        for email in emails:
            folder = self.directory / email.campaign_id
            folder.mkdir(parents=True, exist_ok=True)
            message = EmailMessage()
            message["From"] = email.sender
            message["To"] = email.to
            if email.cc:
                message["Cc"] = ", ".join(email.cc)
            # No Bcc header: a file in the outbox is what every recipient would see.
            message["Subject"] = email.subject
            if email.reply_to:
                message["Reply-To"] = email.reply_to
            message["X-Idempotency-Key"] = idempotency_key
            for name, value in email.headers.items():
                message[name] = value
            message.set_content(email.text)
            message.add_alternative(email.html, subtype="html")
            if email.attachments:
                _attach(message, email.attachments)
            path = folder / f"{email.delivery_id}.eml"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(bytes(message))
            tmp.replace(path)
            results.append(
                SendResult(
                    delivery_id=email.delivery_id, provider_message_id=f"outbox-{email.delivery_id}"
                )
            )
        return results

    async def aclose(self) -> None:
        return None


def _attach(message: EmailMessage, attachments: Sequence[Attachment]) -> None:
    html = message.get_body(("html",))
    assert html is not None  # added just before
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if attachment.content_id is not None:
            html.add_related(
                attachment.content,
                maintype,
                subtype,
                cid=f"<{attachment.content_id}>",
                filename=attachment.filename,
                disposition="inline",
            )
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if attachment.content_id is None:
            message.add_attachment(
                attachment.content, maintype, subtype, filename=attachment.filename
            )
