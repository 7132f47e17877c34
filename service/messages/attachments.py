"""Whether a message's attachments can be sent: the one check, run before anything is
stored or queued, so a file a provider would refuse is a 422 now and not a failed
delivery later.

Refusals (``service.errors.Unprocessable``, 422), each naming the field:

* ``invalid_attachment``: a file name that is empty, longer than 255 characters,
  holds a path separator, a control character (CR/LF included) or ``;`` (SendGrid
  refuses it), or is ``.``/``..``; a content type that is not ``type/subtype``;
  content that is not base64 or is empty; a content id that is not a plain token
  or is used twice.
* ``attachment_too_large``: the message is over its provider's limit.

Sizes are counted as base64, the way Resend states its limit and the way the
files travel (in a MIME message, or in SendGrid's JSON); the body's own bytes
count too, when the caller gives them. Limits use decimal megabytes, so they stay
below the provider's whichever unit it means.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.messages import AttachmentIn
from service.errors import Unprocessable

__all__ = ["MESSAGE_LIMITS", "Attachment", "check_attachments", "check_rules"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a message; with ``content_id`` it is inline, shown where the
    HTML says ``cid:<content_id>`` instead of in the list of attachments."""

    filename: str
    content_type: str  # "type/subtype", no parameters
    content: bytes
    content_id: str | None = None


MB = 1_000_000
# The largest message each provider takes, attachments included; None: not
# checked here (an SMTP server states its own, and refuses a larger message
# for that recipient alone; the outbox writes files).
MESSAGE_LIMITS: dict[str, int | None] = {
    "resend": 40 * MB,  # "40 MB per email after Base64 encoding"
    "mailgun": 25 * MB,  # "25 MB per message, attachments included"
    "sendgrid": 30 * MB - 1,  # "must be less than 30 MB"
    "smtp": None,
    "outbox": None,
}
MAX_FILENAME = 255
_MIME_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_CONTENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")
_NOT_IN_FILENAME = re.compile(r"[/\\;\x00-\x1f\x7f]")


def check_attachments(
    attachments: Sequence[AttachmentIn],
    provider: str,
    *,
    body_bytes: int = 0,
    field: str = "attachments",
) -> tuple[Attachment, ...]:
    """The attachments decoded, ready for ``OutgoingEmail.attachments``; raises
    ``Unprocessable`` (see the module docstring) for the first one that cannot be sent
    through ``provider``, whose message body is ``body_bytes`` long."""
    if provider not in MESSAGE_LIMITS:
        raise ValueError(f"unknown provider {provider!r}")
    decoded: list[Attachment] = []
    content_ids: set[str] = set()
    for i, attachment in enumerate(attachments):
        where = f"{field}.{i}"
        item = _decoded(attachment, where)
        if item.content_id is not None:
            if item.content_id in content_ids:
                raise _invalid(
                    "the content_id is used by another attachment", f"{where}.content_id"
                )
            content_ids.add(item.content_id)
        decoded.append(item)
    limit = MESSAGE_LIMITS[provider]
    if limit is not None and decoded:
        size = body_bytes + sum(_base64_size(len(item.content)) for item in decoded)
        if size > limit:
            raise Unprocessable(
                "attachment_too_large",
                f"the message is {size} bytes with its attachments as base64; "
                f"{provider} takes at most {limit}",
                field,
            )
    return tuple(decoded)


def check_rules(
    rules: Mapping[str, Any] | None, attachments: Sequence[Attachment], field: str
) -> None:
    """Refuse (422 ``attachment_not_allowed``) attachments the message type's rules
    (``schemas.messages.AttachmentRulesIn``) do not allow."""
    if rules is None or not attachments:
        return
    if not rules["allowed"]:
        raise _not_allowed("this message type takes no attachment", field)
    if len(attachments) > rules["max_count"]:
        raise _not_allowed(f"this message type takes at most {rules['max_count']}", field)
    size = sum(len(item.content) for item in attachments)
    if rules["max_bytes"] is not None and size > rules["max_bytes"]:
        message = f"the attachments are {size} bytes; this message type takes {rules['max_bytes']}"
        raise _not_allowed(message, field)
    allowed = rules["content_types"]
    for i, item in enumerate(attachments):
        kind = item.content_type.lower()
        if allowed is not None and not any(_matches(kind, pattern) for pattern in allowed):
            message = f"this message type takes only {', '.join(allowed)}"
            raise _not_allowed(message, f"{field}.{i}.content_type")


def _matches(content_type: str, pattern: str) -> bool:
    pattern = pattern.lower()
    if pattern.endswith("/*"):
        return content_type.startswith(pattern[:-1])
    return content_type == pattern


def _not_allowed(message: str, field: str) -> Unprocessable:
    return Unprocessable("attachment_not_allowed", message, field)


def _decoded(attachment: AttachmentIn, where: str) -> Attachment:
    filename = attachment.filename
    if not filename or len(filename) > MAX_FILENAME:
        raise _invalid(
            f"the file name must have 1 to {MAX_FILENAME} characters", f"{where}.filename"
        )
    if _NOT_IN_FILENAME.search(filename) or filename in (".", ".."):
        raise _invalid(
            "the file name must be a name alone: no path, line break, control character or ';'",
            f"{where}.filename",
        )
    if not _MIME_TYPE.fullmatch(attachment.content_type):
        raise _invalid(
            'the content type must be a MIME type "type/subtype"', f"{where}.content_type"
        )
    content_id = attachment.content_id
    if content_id is not None and not _CONTENT_ID.fullmatch(content_id):
        raise _invalid(
            "the content id must be letters, digits and . _ @ + - (at most 200)",
            f"{where}.content_id",
        )
    try:
        content = base64.b64decode(attachment.content, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("the content must be base64", f"{where}.content") from None
    if not content:
        raise _invalid("the content is empty", f"{where}.content")
    return Attachment(filename, attachment.content_type, content, content_id)


def _base64_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _invalid(message: str, field: str) -> Unprocessable:
    return Unprocessable("invalid_attachment", message, field)
