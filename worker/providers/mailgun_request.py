"""The form of a Mailgun batch send (``POST /v3/{domain}/messages``) and how a batch is split.

One request carries many recipients (``to`` repeated) and a
``recipient-variables`` object with each recipient's own values; Mailgun
substitutes ``%recipient.KEY%`` in the subject, the bodies, the ``h:`` headers
and the ``v:`` variables of each copy. Every field that is the same for the
whole request is sent once, as it is; a field that differs is sent as
``%recipient.KEY%`` and its values go into ``recipient-variables``:

* a campaign sent as a provider template (``OutgoingEmail.template_parts``):
  the body goes once, its ``{{{KEY}}}`` slots become ``%recipient.KEY%``, and
  each recipient carries only its slot values;
* whole bodies (a message that needs Jinja per recipient): each recipient's
  body is one of its values; still one request, so pacing and retries stay per
  batch, but the request grows with the bodies and is split at
  ``MAX_REQUEST_BYTES``.

Attachments are file parts: ``attachment``, or ``inline`` for one with a
``content_id``. Mailgun names an inline file's ``Content-ID`` after its file
name, so an inline part's file name is its ``content_id`` (the HTML's
``cid:`` then finds it). They are the same for every recipient of a request,
so only messages with equal attachments share one.

``v:delivery_id`` and ``v:campaign_id`` come back in every webhook as
``event-data.user-variables``, which is how events find their delivery.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.messages.attachments import Attachment
from service.messages.tracking import TAG_PREFIX as MESSAGE_TAG_PREFIX
from worker.providers.base import OutgoingEmail

__all__ = ["MAX_RECIPIENTS", "MAX_REQUEST_BYTES", "MailgunRequest", "encode_multipart", "requests"]

# Mailgun's limit for one batch send.
MAX_RECIPIENTS = 1000
# Mailgun refuses messages over 25 MB; whole bodies of a large batch could come
# near that, so a request is cut well before.
MAX_REQUEST_BYTES = 16 * 2**20
_SLOT = re.compile(r"\{\{\{([A-Za-z0-9_]+)\}\}\}")
_TAG_UNSAFE = re.compile(r"[^\x20-\x7e]")
_TAG_MAX_LEN = 128


@dataclass(slots=True)
class MailgunRequest:
    """One request's recipients and its form fields (repeated names allowed, in order)."""

    emails: list[OutgoingEmail]
    fields: list[tuple[str, str]] = field(default_factory=list)
    # (field name, attachment): ``attachment`` or ``inline``.
    files: list[tuple[str, Attachment]] = field(default_factory=list)


@functools.lru_cache(maxsize=64)  # one template per campaign, the same string every batch
def _mailgun_slots(template: str) -> str:
    return _SLOT.sub(r"%recipient.\1%", template)


MESSAGES_TAG = "messages"


@functools.lru_cache(maxsize=1024)
def _tag(value: str) -> str:
    # Tags are ASCII, at most 128 characters; a UUID passes untouched. Mailgun keeps
    # statistics per tag and caps how many tags an account has, so the one-to-one
    # messages share one tag; their own id travels in ``v:campaign_id``.
    if value.startswith(MESSAGE_TAG_PREFIX):
        return MESSAGES_TAG
    return _TAG_UNSAFE.sub("_", value)[:_TAG_MAX_LEN] or "_"


def _signature(email: OutgoingEmail) -> tuple[object, ...]:
    # What must be equal for two messages to share a request: the fields that
    # are not substituted (from, the tag) and the set of header names.
    return (
        email.sender,
        email.campaign_id,
        email.template_parts is not None,
        email.template_parts,
        tuple(email.headers),
        email.reply_to is None,
        email.text == "" and email.template_parts is None,
        email.attachments,
    )


def _size(email: OutgoingEmail) -> int:
    # Attachments travel once per request, but a request with them is counted
    # as if each recipient added them: an over-estimate only cuts it sooner.
    files = sum(len(a.content) for a in email.attachments) if email.attachments else 0
    if email.template_parts is not None:
        return sum(len(str(v)) for v in (email.variables or {}).values()) + 256 + files
    return len(email.html) + len(email.text) + len(email.subject) + 256 + files


def requests(emails: Sequence[OutgoingEmail]) -> list[MailgunRequest]:
    """``emails`` as few requests as Mailgun allows, in order within each request.

    A request holds one message per address (``recipient-variables`` is keyed
    by address), at most ``MAX_RECIPIENTS`` and about ``MAX_REQUEST_BYTES``.
    """
    open_: dict[tuple[object, ...], tuple[MailgunRequest, set[str], list[int]]] = {}
    done: list[MailgunRequest] = []
    for email in emails:
        if email.cc or email.bcc:
            # Copies go to every address of a request: such a message goes alone.
            done.append(MailgunRequest([email]))
            continue
        key = _signature(email)
        current = open_.get(key)
        address = email.to.lower()
        size = _size(email)
        if current is not None:
            request, addresses, total = current
            if (
                address in addresses
                or len(request.emails) >= MAX_RECIPIENTS
                or total[0] + size > MAX_REQUEST_BYTES
            ):
                done.append(request)
                current = None
        if current is None:
            current = (MailgunRequest([]), set(), [0])
            open_[key] = current
        current[0].emails.append(email)
        current[1].add(address)
        current[2][0] += size
    done.extend(request for request, _, _ in open_.values())
    for request in done:
        request.fields = _fields(request.emails)
        request.files = [
            ("attachment" if a.content_id is None else "inline", a)
            for a in request.emails[0].attachments
        ]
    return done


def _fields(emails: list[OutgoingEmail]) -> list[tuple[str, str]]:
    first = emails[0]
    per: list[dict[str, Any]] = [{} for _ in emails]
    fields: list[tuple[str, str]] = [("from", first.sender)]
    fields.extend(("to", email.to) for email in emails)
    fields.extend(("cc", address) for address in first.cc)
    fields.extend(("bcc", address) for address in first.bcc)

    def shared(name: str, key: str, values: list[str]) -> None:
        value = values[0]
        if any(other != value for other in values):
            value = f"%recipient.{key}%"
            for mine, own in zip(per, values, strict=True):
                mine[key] = own
        fields.append((name, value))

    shared("subject", "_subject", [email.subject for email in emails])
    if first.template_parts is not None:
        html, text = first.template_parts
        fields.append(("html", _mailgun_slots(html)))
        if text:
            fields.append(("text", _mailgun_slots(text)))
        for mine, email in zip(per, emails, strict=True):
            mine.update(email.variables or {})
    else:
        shared("html", "_html", [email.html for email in emails])
        if first.text:
            shared("text", "_text", [email.text for email in emails])
    if first.reply_to is not None:
        shared("h:Reply-To", "_reply_to", [email.reply_to or "" for email in emails])
    for n, name in enumerate(first.headers):
        shared(f"h:{name}", f"_h{n}", [email.headers[name] for email in emails])
    fields.append(("o:tag", _tag(first.campaign_id)))
    fields.append(("v:campaign_id", first.campaign_id))
    shared("v:delivery_id", "_delivery_id", [str(email.delivery_id) for email in emails])
    # Always sent, even for one recipient: without it every copy would show
    # every address of the request in its To.
    variables = {email.to: mine for email, mine in zip(emails, per, strict=True)}
    fields.append(("recipient-variables", orjson.dumps(variables).decode()))
    return fields


def encode_multipart(
    fields: Sequence[tuple[str, str]],
    boundary: str,
    files: Sequence[tuple[str, Attachment]] = (),
) -> bytes:
    """``fields`` and ``files`` as a ``multipart/form-data`` body (names are ASCII,
    values UTF-8; ``boundary`` must not occur in a file's bytes, so a random one)."""
    head = f"--{boundary}\r\n".encode()
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(head)
        parts.append(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        parts.append(value.encode())
        parts.append(b"\r\n")
    for name, attachment in files:
        filename = attachment.filename if name == "attachment" else attachment.content_id
        parts.append(head)
        parts.append(
            f'Content-Disposition: form-data; name="{name}"; filename="{_quoted(filename or "")}"'
            f"\r\nContent-Type: {attachment.content_type}\r\n\r\n".encode()
        )
        parts.append(attachment.content)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def _quoted(value: str) -> str:
    # As browsers (and httpx) write a form's file name: the quote and line breaks escaped.
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
