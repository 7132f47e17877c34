"""SendGrid's Signed Event Webhook: the signature, and its events → ``ProviderEvent``.

Signature: ECDSA P-256 with SHA-256 over the ``X-Twilio-Email-Event-Webhook-Timestamp``
header's bytes followed by the raw body (no separator), base64 DER in
``X-Twilio-Email-Event-Webhook-Signature``; the public key is SendGrid's base64
DER ``SubjectPublicKeyInfo``. SendGrid sets no freshness rule; a timestamp
further than ``SENDGRID_WEBHOOK_TOLERANCE_SECONDS`` from now is refused so a
captured post cannot be replayed later.

Events (a JSON array) map to the statuses Resend's do: ``processed`` → sent,
``delivered``, ``deferred`` → delayed (a note), ``bounce`` → a permanent bounce
(suppressed), its ``type: blocked`` and ``dropped`` → failed, except a drop
because the address bounced or complained before → suppressed; ``spamreport``
→ complained, ``open`` / ``click`` → opened / clicked; the rest (unsubscribes,
resubscribes, account changes) are logged as ``other``. The ``custom_args`` the
adapter sent come back as top-level keys and are the event's tags.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature as _BadECDSA
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from schemas.tracking import ProviderEvent, ProviderEventType
from service.errors import InvalidSignature

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_KINDS: dict[str, ProviderEventType] = {
    "processed": "sent",
    "delivered": "delivered",
    "deferred": "delivery_delayed",
    "bounce": "bounced",
    "dropped": "failed",
    "spamreport": "complained",
    "open": "opened",
    "click": "clicked",
}
# Drop reasons that mean SendGrid holds the address on a bounce or spam list.
_SUPPRESSING_DROPS = frozenset({"bounced address", "spam reporting address"})
_SUPPRESSING = frozenset({"bounced", "complained", "suppressed"})
_TAGS = ("delivery_id", "campaign_id")
_KEPT = ("sg_message_id", "reason", "status", "type", "response", "attempt", "category")


def public_key(encoded: str) -> ec.EllipticCurvePublicKey:
    """The verification key from SendGrid's base64 DER (a PEM is taken too)."""
    try:
        if "BEGIN PUBLIC KEY" in encoded:
            key = serialization.load_pem_public_key(encoded.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignature(f"the webhook public key does not load: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidSignature("the webhook public key is not an EC key")
    return key


def verify(
    key: ec.EllipticCurvePublicKey,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float | None = None,
    now: float | None = None,
) -> None:
    """Raise ``InvalidSignature`` unless SendGrid signed ``body`` (within ``tolerance``)."""
    signature, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if not signature or not stamp:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    if tolerance is not None:
        try:
            age = abs((time.time() if now is None else now) - int(stamp))
        except ValueError:
            raise InvalidSignature(f"{TIMESTAMP_HEADER} is not an integer") from None
        if age > tolerance:
            raise InvalidSignature(f"{TIMESTAMP_HEADER} is outside the tolerance")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, _BadECDSA):
        raise InvalidSignature("the signature does not match") from None


def _kind(event: Mapping[str, Any]) -> ProviderEventType:
    name = str(event.get("event", ""))
    kind = _KINDS.get(name, "other")
    if name == "bounce" and event.get("type") == "blocked":
        return "failed"  # refused this time; the address may take mail later
    if name == "dropped" and str(event.get("reason", "")).lower() in _SUPPRESSING_DROPS:
        return "suppressed"
    return kind


def _occurred(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return datetime.now(UTC)


def _event_id(event: Mapping[str, Any]) -> str:
    sg_id = event.get("sg_event_id")
    if isinstance(sg_id, str) and sg_id:
        return f"sendgrid:{sg_id}"[:100]
    # No id (never documented missing): one from the content, so a repost dedupes.
    digest = hashlib.sha256(repr(sorted(event.items())).encode()).hexdigest()
    return f"sendgrid:h:{digest}"


def _text(value: Any, limit: int) -> str | None:
    return str(value)[:limit] if value not in (None, "") else None


def to_event(event: Any) -> ProviderEvent | None:
    """One event of a verified batch; None for an entry that is no event object."""
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    kind = _kind(event)
    name: str = event["event"]
    email = event.get("email")
    bounce_type = None
    if name == "bounce":
        bounce_type = "Permanent" if event.get("type", "bounce") == "bounce" else "Transient"
    return ProviderEvent(
        type=kind,
        event_id=_event_id(event),
        provider="sendgrid",
        provider_type=name[:100],
        # sg_message_id only starts with the X-Message-Id stored on the row, so it
        # is kept in ``data``; the delivery_id custom arg does the matching.
        email_id=None,
        tags={k: str(event[k]) for k in _TAGS if isinstance(event.get(k), str | int)},
        occurred_at=_occurred(event.get("timestamp")),
        bounce_type=bounce_type,
        link=_text(event.get("url"), 2000) if kind == "clicked" else None,
        detail=_text(event.get("reason") or event.get("response"), 500),
        data={k: event[k] for k in _KEPT if k in event},
        recipients=(
            [email.strip().lower()[:320]]
            if kind in _SUPPRESSING and isinstance(email, str) and "@" in email
            else []
        ),
    )
