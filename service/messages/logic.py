"""Sending rules: a request's messages checked against their types, queued in one go.

Each message is checked against its type's declared variables (every missing
or unknown one named), its attachments against the configured provider; then,
in the request's transaction, the ``Idempotency-Key`` is claimed, the message
rows and one ``messages.v1`` outbox row each are written (a message with a
``send_at`` ahead gets a timer instead: ``service.messages.scheduling``). The unit of work
publishes them once committed; the ``message-sender`` role sends them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.messages import MessageIn
from service.errors import Conflict, InvalidMessageData, Unprocessable
from service.leads.logic import normalize_email
from service.messages import inline, repository, scheduling
from service.messages.attachments import check_attachments, check_rules
from service.models import MessageType
from service.settings import Settings

# What a declared variable's type accepts (a bool is not a number).
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
    "list": (list,),
    "object": (dict,),
}


def checked_data(message_type: MessageType, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The data with fallbacks applied; 422 naming every missing, mistyped or unknown variable."""
    declared = {v["name"]: v for v in message_type.variables}
    missing: list[tuple[str, str]] = []
    mistyped: list[tuple[str, str]] = []
    result: dict[str, Any] = {}
    for name, variable in declared.items():
        field = f"{where}.data.{name}"
        if data.get(name) is None:
            if variable["required"]:
                missing.append((field, f"'{name}' is required"))
            elif variable.get("fallback") is not None:
                result[name] = variable["fallback"]
            continue
        value, wanted = data[name], variable["type"]
        if not isinstance(value, _TYPES[wanted]) or (
            wanted == "number" and isinstance(value, bool)
        ):
            mistyped.append((field, f"'{name}' must be a {wanted}"))
            continue
        result[name] = value
    unknown = [
        (f"{where}.data.{name}", f"'{name}' is not a variable of '{message_type.key}'")
        for name in sorted(set(data) - set(declared))
    ]
    problems = missing + mistyped + unknown
    if problems:
        raise InvalidMessageData("; ".join(message for _, message in problems), problems)
    return result


def _address(address: str, field: str) -> str:
    try:
        return normalize_email(address)
    except ValueError as exc:
        raise Unprocessable("invalid_email", str(exc), field) from None


# Fields added to a message after keys were first stored: left out of the hash
# while unused, so a request replayed across an upgrade still hashes as it did.
_LATER_FIELDS = ("cc", "bcc", "send_at", "template")


def body_hash(messages: Sequence[MessageIn]) -> bytes:
    """The request as parsed, hashed: the same messages hash the same however formatted."""
    dumped = [m.model_dump(mode="json") for m in messages]
    for message in dumped:
        for name in _LATER_FIELDS:
            if not message[name]:
                del message[name]
    return hashlib.sha256(orjson.dumps(dumped, option=orjson.OPT_SORT_KEYS)).digest()


async def queue(
    session: AsyncSession,
    settings: Settings,
    sponsor_id: str,
    messages: Sequence[MessageIn],
    idempotency_key: str | None,
    now: datetime | None = None,
) -> list[uuid.UUID]:
    """Check, then write the messages and their outbox rows (or, for a message with
    a ``send_at`` ahead, its timer); the ids, in request order.

    With an idempotency key held by an earlier request with the same body, its
    ids and nothing written; with another body, 409 ``idempotency_key_reused``.
    """
    await inline.check(messages)
    keys = sorted({m.type for m in messages if m.type is not None})
    types = await repository.types_by_key(session, sponsor_id, keys)
    moment = now or datetime.now(UTC)
    rows = [
        row
        for i, message in enumerate(messages)
        for row in _rows(sponsor_id, types, message, i, settings, moment)
    ]
    ids = [row["id"] for row in rows]
    if idempotency_key is not None:
        digest = body_hash(messages)
        held = await repository.claim_idempotency_key(
            session, sponsor_id, idempotency_key, digest, ids
        )
        if held is not None:
            held_hash, held_ids = held
            if held_hash != digest:
                raise Conflict(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another request body",
                    "Idempotency-Key",
                )
            return held_ids
    await repository.add_messages(session, rows)
    await scheduling.queue_now(session, rows)
    await scheduling.schedule(session, rows)
    return ids


def _rows(
    sponsor_id: str,
    types: Mapping[str, MessageType],
    message: MessageIn,
    i: int,
    settings: Settings,
    now: datetime,
) -> list[dict[str, Any]]:
    """The rows of one message of the request: one per recipient."""
    where = f"messages.{i}"
    send_at = scheduling.due_time(message.send_at, now, f"{where}.send_at")
    message_type, data, defaults = _source(types, message, where)
    if message.attachments:
        decoded = check_attachments(
            message.attachments, settings.email_provider, field=f"{where}.attachments"
        )
        if message_type is not None:
            check_rules(message_type.attachment_rules, decoded, f"{where}.attachments")
    recipients = [_address(message.to, f"{where}.to")] if message.to else defaults
    if not recipients:
        why = (
            f"the type '{message.type}' has no default recipients"
            if message.type
            else "a message with its own template has no default recipients"
        )
        raise Unprocessable("missing_recipient", f"give 'to': {why}", f"{where}.to")
    reply_to = _address(message.reply_to, f"{where}.reply_to") if message.reply_to else None
    cc = [_address(a, f"{where}.cc.{j}") for j, a in enumerate(message.cc)]
    bcc = [_address(a, f"{where}.bcc.{j}") for j, a in enumerate(message.bcc)]
    attachments = [a.model_dump(mode="json") for a in message.attachments]
    return [
        {
            "id": uuid.uuid4(),
            "sponsor_id": sponsor_id,
            "type_id": message_type.id if message_type else None,
            "type_key": message_type.key if message_type else None,
            "template": message.template.model_dump() if message.template else None,
            "to_email": to,
            **_copies(to, cc, bcc),
            "data": data,
            "reply_to": reply_to,
            "attachments": attachments,
            "tags": dict(message.tags),
            "status": "queued" if send_at is None else "scheduled",
            "send_at": send_at,
        }
        for to in recipients
    ]


def _source(
    types: Mapping[str, MessageType], message: MessageIn, where: str
) -> tuple[MessageType | None, dict[str, Any], list[str]]:
    """The message's type (None with its own template), its data, its default recipients."""
    if message.type is None:
        return None, dict(message.data), []  # a one-off template declares no variables
    message_type = types.get(message.type)
    if message_type is None:
        raise Unprocessable(
            "unknown_message_type", f"no message type '{message.type}'", f"{where}.type"
        )
    data = checked_data(message_type, message.data, where)
    return message_type, data, list(message_type.default_recipients)


def _copies(to: str, cc: Sequence[str], bcc: Sequence[str]) -> dict[str, list[str]]:
    """``cc`` and ``bcc`` without the recipient or a repeat: an address gets one copy
    (and SendGrid refuses an address twice in one message)."""
    seen = {to}
    result: dict[str, list[str]] = {"cc": [], "bcc": []}
    for name, addresses in (("cc", cc), ("bcc", bcc)):
        for address in addresses:
            if address not in seen:
                seen.add(address)
                result[name].append(address)
    return result
