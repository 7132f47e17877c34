"""Resend webhook payloads → ``ProviderEvent`` (the ``provider-events.v1`` contract)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

from schemas.tracking import ProviderEvent, ProviderEventType
from service.errors import BadRequest

_KNOWN = frozenset(get_args(ProviderEventType))
# Events that suppress the address: only these carry it further (see ``_recipients``).
_SUPPRESSING = frozenset({"bounced", "complained", "suppressed"})


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _tags(raw: Any) -> dict[str, str]:
    """Resend sends tags as an object; older payloads as a list of {name, value}."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {
            str(t["name"]): str(t.get("value", ""))
            for t in raw
            if isinstance(t, dict) and "name" in t
        }
    return {}


def _recipients(kind: str, raw: Any) -> list[str]:
    """The ``to`` addresses of a suppressing event, lower-cased as leads store them."""
    if kind not in _SUPPRESSING:
        return []
    values = raw if isinstance(raw, list) else [raw]
    return [v.strip().lower()[:320] for v in values if isinstance(v, str) and "@" in v][:50]


def to_event(msg_id: str, payload: Any) -> ProviderEvent:
    """Map one verified webhook body; unknown event types are kept as ``other``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise BadRequest("invalid_webhook", "the body must be a JSON object with a 'type'", "type")
    provider_type: str = payload["type"]
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    assert isinstance(data, dict)
    short = provider_type.removeprefix("email.")
    kind = short if short in _KNOWN else "other"
    bounce = data.get("bounce") if isinstance(data.get("bounce"), dict) else {}
    click = data.get("click") if isinstance(data.get("click"), dict) else {}
    assert isinstance(bounce, dict) and isinstance(click, dict)
    detail = None
    for key in ("bounce", "failed", "suppressed"):
        part = data.get(key)
        if isinstance(part, dict):
            detail = str(part.get("message") or part.get("reason") or "")[:500] or None
    occurred = (
        _time(click.get("timestamp"))
        or _time(payload.get("created_at"))
        or _time(data.get("created_at"))
        or datetime.now(UTC)
    )
    email_id = data.get("email_id")
    return ProviderEvent(
        type=kind,
        event_id=f"resend:{msg_id}"[:100],
        provider_type=provider_type[:100],
        email_id=str(email_id) if email_id else None,
        tags=_tags(data.get("tags")),
        occurred_at=occurred,
        bounce_type=str(bounce["type"]) if bounce.get("type") else None,
        link=str(click["link"]) if click.get("link") else None,
        detail=detail,
        # Addresses and content stay with the provider; ids and reasons are enough here,
        # except the address of a bounce or complaint, which must be suppressed.
        data={k: v for k, v in data.items() if k in ("bounce", "failed", "suppressed", "tags")},
        recipients=_recipients(kind, data.get("to")),
    )
