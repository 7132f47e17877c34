"""Mailgun webhooks: the signature check and the mapping to ``ProviderEvent``.

Mailgun signs inside the JSON body, not in headers: ``signature`` holds a
``timestamp`` (a string of epoch seconds), a random 50-character ``token`` and
``signature``, the lowercase hex HMAC-SHA256 of ``timestamp + token`` (no
separator) keyed with the HTTP webhook signing key. One event per request, in
``event-data``; its ``user-variables`` carry the ``v:delivery_id`` and
``v:campaign_id`` the adapter sent, which is how the event finds its delivery.

Event mapping (Mailgun's ``event`` → ``ProviderEvent.type``):

* ``accepted`` → ``sent``; ``delivered`` → ``delivered``; ``opened`` /
  ``clicked`` → ``opened`` / ``clicked``; ``complained`` → ``complained``;
  ``unsubscribed`` → ``unsubscribed`` (the address is suppressed);
* ``failed`` with ``severity: permanent`` → ``suppressed`` when ``reason`` is
  ``suppress-*`` (Mailgun did not send: the address is on one of its lists),
  else ``bounced`` with ``bounce_type: Permanent`` (a hard bounce);
* ``failed`` with ``severity: temporary`` → ``bounced`` with ``bounce_type:
  Transient`` (a note; Mailgun retries), except ``reason: old``, Mailgun's
  last word on a message it gave up on → ``failed``;
* anything else → ``other``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

from schemas.tracking import ProviderEvent, ProviderEventType
from service.errors import BadRequest, InvalidSignature

__all__ = ["sign", "to_event", "verify"]

_SIMPLE: dict[str, ProviderEventType] = {
    "accepted": "sent",
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}
_SUPPRESSING = frozenset({"bounced", "complained", "suppressed", "unsubscribed"})


def sign(key: str, timestamp: str, token: str) -> str:
    """The hex signature of a timestamp and token (for tests and local tools)."""
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def verify(key: str, payload: Any, max_age: float, now: float | None = None) -> str:
    """Check the body's ``signature`` block; its token, or ``InvalidSignature``.

    The timestamp is hashed exactly as received; one more than ``max_age``
    seconds away from now (either way) is refused, so a captured request
    cannot be replayed later (the caller refuses a token seen before).
    """
    block = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(block, dict):
        raise InvalidSignature("the body has no signature block")
    timestamp, token, signature = (block.get(k) for k in ("timestamp", "token", "signature"))
    if not isinstance(timestamp, str | int) or not isinstance(token, str) or not token:
        raise InvalidSignature("missing signature.timestamp or signature.token")
    if not isinstance(signature, str) or not signature:
        raise InvalidSignature("missing signature.signature")
    expected = sign(key, str(timestamp), token)
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise InvalidSignature("the signature does not match")
    try:
        stamp = float(timestamp)
    except ValueError:
        raise InvalidSignature("signature.timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - stamp) > max_age:
        raise InvalidSignature("signature.timestamp is outside the accepted window")
    return token


def _kind(data: dict[str, Any]) -> tuple[ProviderEventType, str | None]:
    """The event type and, for failures, the bounce type."""
    event = str(data.get("event") or "")
    if event in _SIMPLE:
        return _SIMPLE[event], None
    if event != "failed":
        return "other", None
    reason = str(data.get("reason") or "")
    if data.get("severity") == "permanent":
        if reason.startswith("suppress-"):
            return "suppressed", None
        return "bounced", "Permanent"
    if reason == "old":
        return "failed", None
    return "bounced", "Transient"


def _tags(raw: Any) -> dict[str, str]:
    # Only the variables the adapter set: the rest is the sender's business.
    if not isinstance(raw, dict):
        return {}  # Mailgun's own examples send [] when there are none
    return {k: str(raw[k])[:200] for k in ("delivery_id", "campaign_id") if k in raw}


def _detail(data: dict[str, Any]) -> str | None:
    status = data.get("delivery-status")
    parts = [str(data.get("reason") or "")]
    if isinstance(status, dict):
        parts += [str(status.get(k) or "") for k in ("code", "message", "description")]
    return " ".join(p for p in parts if p)[:500] or None


def to_event(payload: Any) -> ProviderEvent:
    """Map one verified webhook body; unknown event types are kept as ``other``."""
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise BadRequest("invalid_webhook", "the body has no event-data.event", "event-data")
    event_id = data.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise BadRequest("invalid_webhook", "the body has no event-data.id", "event-data.id")
    kind, bounce_type = _kind(data)
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = headers.get("message-id") if isinstance(headers, dict) else None
    stamp = data.get("timestamp")
    occurred = (
        datetime.fromtimestamp(stamp, UTC)
        if isinstance(stamp, int | float) and not isinstance(stamp, bool)
        else datetime.now(UTC)
    )
    recipient = data.get("recipient")
    recipients = (
        [recipient.strip().lower()[:320]]
        if kind in _SUPPRESSING and isinstance(recipient, str) and "@" in recipient
        else []
    )
    failure = {k: data[k] for k in ("severity", "reason") if k in data}
    return ProviderEvent(
        type=kind,
        event_id=f"mailgun:{event_id}"[:100],
        provider="mailgun",
        provider_type=str(data["event"])[:100],
        email_id=str(message_id).strip("<>") if message_id else None,
        tags=_tags(data.get("user-variables")),
        occurred_at=occurred,
        bounce_type=bounce_type,
        link=str(data["url"]) if kind == "clicked" and data.get("url") else None,
        detail=_detail(data) if kind in ("bounced", "failed", "suppressed") else None,
        data=failure,
        recipients=recipients,
    )
