"""The body of a Resend ``POST /emails/batch`` (or ``POST /emails`` for one email with
attachments) and the pairing of a batch's answer with the emails."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.utils import parseaddr
from typing import Any

import orjson
import resend

from service.errors import PermanentProviderError
from service.messages.attachments import Attachment
from worker.providers.base import OutgoingEmail, SendResult

__all__ = ["email_params", "pair_results", "resend_from", "single_key"]

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAG_MAX_LEN = 256
_IDEMPOTENCY_KEY_MAX_LEN = 256


@functools.lru_cache(maxsize=1024)  # the same campaign id for every email of a batch
def _tag_value(value: str) -> str:
    # Resend rejects the whole email for any other character; a UUID or an int
    # passes untouched, anything else is made safe rather than lost.
    return _TAG_UNSAFE.sub("_", value)[:_TAG_MAX_LEN] or "_"


@functools.lru_cache(maxsize=256)  # one sender per campaign
def resend_from(name: str, address: str) -> str:
    """``from`` as Resend documents it: ``Name <address>``, the name as it is.

    Resend refuses what RFC 5322 would send for a name that is not plain ASCII
    or holds punctuation (an RFC 2047 encoded word, a quoted string), so the
    name goes out unencoded and unquoted, without the characters that would
    break that form.
    """
    clean = " ".join("".join(c for c in name if c not in '<>"').split())
    return f"{clean} <{address}>" if clean else address


@functools.lru_cache(maxsize=256)
def _from_rfc5322(sender: str) -> str:
    """``resend_from`` of a sender given only in its RFC 5322 form (``formataddr``'s)."""
    name, address = parseaddr(sender)
    if not address:
        return sender
    # An encoded word Python cannot read stays the name as written.
    with contextlib.suppress(HeaderParseError, LookupError, UnicodeDecodeError):
        name = str(make_header(decode_header(name)))
    return resend_from(name, address)


def email_params(email: OutgoingEmail) -> resend.Emails.SendParams:
    sender = (
        resend_from(email.sender_name, email.sender_address)
        if email.sender_address
        else _from_rfc5322(email.sender)
    )
    params: resend.Emails.SendParams = {
        "from": sender,
        "to": [email.to],
        "subject": email.subject,
        "tags": [
            {"name": "campaign_id", "value": _tag_value(email.campaign_id)},
            # Digits (and a sign) only: already a valid tag value.
            {"name": "delivery_id", "value": str(email.delivery_id)},
        ],
    }
    if email.template_id is not None:
        params["template"] = {"id": email.template_id, "variables": email.variables or {}}
    else:
        params["html"] = _body(email.html, email.html_json)
        # An empty text part is worse than none: clients would show a blank body.
        if email.text or email.text_json not in (None, b'""'):
            params["text"] = _body(email.text, email.text_json)
    if email.reply_to:
        params["reply_to"] = email.reply_to
    if email.cc:
        params["cc"] = list(email.cc)
    if email.bcc:
        params["bcc"] = list(email.bcc)
    if email.headers:
        params["headers"] = dict(email.headers)
    if email.attachments:
        params["attachments"] = [_attachment(a) for a in email.attachments]
    return params


def _attachment(attachment: Attachment) -> resend.Attachment:
    # Base64 text: the SDK's other form, a list of ints, is six times larger as JSON.
    params: resend.Attachment = {
        "filename": attachment.filename,
        "content": base64.b64encode(attachment.content).decode("ascii"),
        "content_type": attachment.content_type,
    }
    if attachment.content_id is not None:
        params["content_id"] = attachment.content_id
    return params


def single_key(batch_key: str, delivery_id: int) -> str:
    """The idempotency key of one email of a batch sent through ``POST /emails``.

    Derived from the batch's key, so a retry of the batch replays it; hashed
    when it would pass Resend's 256 characters.
    """
    key = f"{batch_key}-a{delivery_id}"
    if len(key) <= _IDEMPOTENCY_KEY_MAX_LEN:
        return key
    return f"{hashlib.sha256(batch_key.encode()).hexdigest()}-a{delivery_id}"


def _body(value: str, encoded: bytes | None) -> Any:
    return value if encoded is None else orjson.Fragment(encoded)


def pair_results(emails: Sequence[OutgoingEmail], response: Mapping[str, Any]) -> list[SendResult]:
    """Pair the answer's ids and per-email errors with ``emails``, in order.

    Resend documents ``data`` as the ids of the *created* emails only, with
    ``errors[].index`` pointing into the request; so ``data`` is compacted and
    the i-th id belongs to the i-th email that has no error. An answer with one
    entry per email (ids aligned by position) is accepted too. Any other shape
    cannot be paired safely: some emails may be out, and resending would send
    them twice, so the batch is refused as permanent (webhook events can still
    be matched through the ``delivery_id`` tag).
    """
    count = len(emails)
    raw_data = response.get("data")
    raw_errors = response.get("errors") or []
    data: list[Any] = raw_data if isinstance(raw_data, list) else []
    errors: dict[int, str] = {}
    for item in raw_errors if isinstance(raw_errors, list) else []:
        if not isinstance(item, dict):
            continue
        index = item.get("index")
        if isinstance(index, int) and 0 <= index < count and index not in errors:
            errors[index] = str(item.get("message") or "rejected by provider")

    accepted = [i for i in range(count) if i not in errors]
    if len(data) == len(accepted):
        ids = dict(zip(accepted, data, strict=True))
    elif len(data) == count:
        ids = {i: data[i] for i in accepted}
    else:
        raise PermanentProviderError(
            "unpairable_response",
            f"{len(data)} ids and {len(errors)} errors for a batch of {count}",
        )

    results: list[SendResult] = []
    for i, email in enumerate(emails):
        if i in errors:
            results.append(SendResult(delivery_id=email.delivery_id, error=errors[i]))
            continue
        entry = ids[i]
        message_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(message_id, str) and message_id:
            results.append(
                SendResult(delivery_id=email.delivery_id, provider_message_id=message_id)
            )
        else:
            results.append(
                SendResult(delivery_id=email.delivery_id, error="provider returned no message id")
            )
    return results
