"""HTTP request bodies of transactional messages (one-to-one emails): for now, attachments.

The contract carries the shape only. Whether a file is acceptable, and for which
provider, is decided in one place, ``service.messages.attachments.check_attachments``,
so every refusal there has a stable code (``invalid_attachment``,
``attachment_too_large``) instead of the generic ``validation_error``.
"""

from __future__ import annotations

from pydantic import Field

from schemas.http import Body


class AttachmentIn(Body):
    """A file sent with a message; with ``content_id`` it is shown inline in the HTML."""

    filename: str = Field(
        description="the name the recipient sees: no path, no line break, at most 255 characters",
        examples=["invoice-2026-12.pdf"],
    )
    content_type: str = Field(
        description='the MIME type, "type/subtype" without parameters',
        examples=["application/pdf"],
    )
    content: str = Field(description="the file's bytes, base64 (standard alphabet, padded)")
    content_id: str | None = Field(
        default=None,
        description='makes the file inline: the HTML shows it as <img src="cid:CONTENT_ID">',
        examples=["logo"],
    )
