"""Svix / Standard Webhooks signature verification (how Resend signs webhooks).

``signed = f"{id}.{timestamp}.{body}"``; the key is the base64 part of the
``whsec_…`` secret; the header holds space-separated ``v1,<base64 HMAC>``
entries (several during a key rotation; other versions are ignored). The
timestamp must be within five minutes of now, either way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from service.errors import InvalidSignature

TOLERANCE_SECONDS = 300


def _key(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature("the webhook secret is not base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,…`` signature of a message (for tests and local tools)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
    """Check a webhook; returns its message id (``svix-id``) or raises ``InvalidSignature``."""
    msg_id = headers.get("svix-id") or headers.get("webhook-id")
    stamp = headers.get("svix-timestamp") or headers.get("webhook-timestamp")
    signatures = headers.get("svix-signature") or headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise InvalidSignature("missing svix-id, svix-timestamp or svix-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature("svix-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > TOLERANCE_SECONDS:
        raise InvalidSignature("svix-timestamp is outside the tolerance")
    expected = sign(secret, msg_id, timestamp, body).partition(",")[2].encode()
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return msg_id
    raise InvalidSignature("no matching v1 signature")
