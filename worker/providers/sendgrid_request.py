"""The bodies of SendGrid ``POST /v3/mail/send`` requests for a batch of emails.

Two shapes (docs/providers.md, "SendGrid"):

* **Substitutions.** Emails that carry a template (``OutgoingEmail.template_id``)
  share one request: the template's body goes once in ``content``, and each
  recipient is a personalization with its subject, its headers, its
  ``custom_args`` and its variables as ``substitutions`` (``{{{KEY}}}`` → value,
  the template's own placeholders, replaced as given).
* **Whole bodies.** ``content`` is global to a request, so an email rendered
  whole (per-recipient Jinja) is a request of its own with one personalization.
  So are ``attachments`` (global too): an email that carries some goes whole,
  its template filled in here, each file base64 with its ``disposition``
  (``inline`` with its ``content_id``, else ``attachment``).

Every personalization carries ``custom_args`` ``delivery_id`` and
``campaign_id``: SendGrid copies them onto each webhook event, which is how an
event finds its delivery (``service/webhooks/sendgrid_events.py``).
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from service.messages.attachments import Attachment
from worker.providers.base import OutgoingEmail

__all__ = [
    "MAX_SUBSTITUTION_BYTES",
    "LocalTemplate",
    "fits",
    "substituted",
    "substitutions",
    "template_body",
    "whole_body",
]

# tsg_mail_v3.yaml: substitutions "may not exceed 10,000 bytes per personalization".
MAX_SUBSTITUTION_BYTES = 10_000
_CATEGORY_UNSAFE = re.compile(r"[^\x20-\x7e]")
_CATEGORY_MAX_LEN = 255
_PLACEHOLDER = re.compile(r"\{\{\{\w+\}\}\}")


@dataclass(frozen=True, slots=True)
class LocalTemplate:
    """A campaign's body with ``{{{KEY}}}`` placeholders, sent in each request's ``content``."""

    html: str
    text: str
    keys: tuple[str, ...]


def _address(value: str) -> dict[str, str]:
    name, address = parseaddr(value)
    result = {"email": address or value}
    if name:
        result["name"] = name
    return result


@functools.lru_cache(maxsize=1024)  # the same campaign id for every email of a batch
def _category(campaign_id: str) -> str:
    # ASCII only, at most 255 characters: SendGrid refuses the request otherwise.
    return _CATEGORY_UNSAFE.sub("_", campaign_id)[:_CATEGORY_MAX_LEN] or "_"


def _content(html: str, text: str) -> list[dict[str, str]]:
    # text/plain must come first; an empty block is refused, and a blank text part
    # is worse than none.
    content = []
    if text:
        content.append({"type": "text/plain", "value": text})
    content.append({"type": "text/html", "value": html or " "})
    return content


def _personalization(email: OutgoingEmail) -> dict[str, Any]:
    personalization: dict[str, Any] = {
        "to": [_address(email.to)],
        "subject": email.subject,
        "custom_args": {"delivery_id": str(email.delivery_id), "campaign_id": email.campaign_id},
    }
    if email.cc:
        personalization["cc"] = [_address(address) for address in email.cc]
    if email.bcc:
        personalization["bcc"] = [_address(address) for address in email.bcc]
    if email.headers:
        personalization["headers"] = dict(email.headers)
    return personalization


def _envelope(first: OutgoingEmail, content: list[dict[str, str]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": _address(first.sender),
        "content": content,
        "categories": [_category(first.campaign_id)],
    }
    if first.reply_to:
        body["reply_to"] = _address(first.reply_to)
    return body


def substitutions(template: LocalTemplate, variables: Mapping[str, str | int]) -> dict[str, str]:
    """The personalization's ``substitutions``: each placeholder and its value."""
    return {"{{{" + key + "}}}": str(variables.get(key, "")) for key in template.keys}


def fits(subs: Mapping[str, str]) -> bool:
    """True when the substitutions are within SendGrid's per-personalization limit."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in subs.items()) <= MAX_SUBSTITUTION_BYTES


def template_body(
    template: LocalTemplate, emails: Sequence[OutgoingEmail], subs: Sequence[Mapping[str, str]]
) -> dict[str, Any]:
    """One request for ``emails`` (same sender) that share ``template``."""
    body = _envelope(emails[0], _content(template.html, template.text))
    personalizations = []
    for email, values in zip(emails, subs, strict=True):
        personalization = _personalization(email)
        personalization["substitutions"] = dict(values)
        personalizations.append(personalization)
    body["personalizations"] = personalizations
    return body


def substituted(template: LocalTemplate, subs: Mapping[str, str]) -> tuple[str, str]:
    """The html and text the recipient gets: the template with its placeholders replaced.

    In one pass, so a value that happens to read like a placeholder stays as it is.
    """

    def fill(part: str) -> str:
        return _PLACEHOLDER.sub(lambda m: subs.get(m.group(0), m.group(0)), part)

    return fill(template.html), fill(template.text)


def whole_body(
    email: OutgoingEmail, html: str | None = None, text: str | None = None
) -> dict[str, Any]:
    """One request for one email with its whole body (``html``/``text`` override its own)."""
    body = _envelope(
        email, _content(email.html if html is None else html, email.text if text is None else text)
    )
    body["personalizations"] = [_personalization(email)]
    if email.attachments:
        body["attachments"] = [_attachment(a) for a in email.attachments]
    return body


def _attachment(attachment: Attachment) -> dict[str, str]:
    item = {
        "content": base64.b64encode(attachment.content).decode("ascii"),
        "type": attachment.content_type,
        "filename": attachment.filename,
        "disposition": "attachment" if attachment.content_id is None else "inline",
    }
    if attachment.content_id is not None:
        item["content_id"] = attachment.content_id
    return item
