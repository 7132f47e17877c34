"""Trigger rules: checked whole at save, applied to upstream events by the ``trigger`` role.

A rule names a topic, a condition (``service.triggers.condition``) and actions
(a message type, a recipient, a mapping of the type's variables to event
paths). When an event meets the condition, the (rule, event id) pair is
claimed in ``trigger_firings`` and the actions' messages are queued through
``service.messages.logic.queue``, all in the consumer's transaction: a replayed
or redelivered event finds the pair claimed and queues nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_LEADS
from schemas.messages import MessageIn
from schemas.triggers import TRIGGER_TOPICS, TriggerActionIn, TriggerRuleIn
from service.errors import ClientError, Unprocessable
from service.leads.logic import normalize_email
from service.messages import logic as messages
from service.messages import repository as message_types
from service.models import TriggerRule
from service.settings import Settings
from service.triggers import condition, repository

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    """An upstream event as rules see it: its topic, ids and a plain JSON view."""

    topic: str
    event_id: str
    sponsor_id: str
    view: Mapping[str, Any]
    # When upstream made the change, if the event says (``leads.v1``'s ``updated_at``).
    changed_at: datetime | None = None


async def check(session: AsyncSession, sponsor_id: str, body: TriggerRuleIn) -> None:
    """422 naming the field of anything in the rule that could not fire as written."""
    if body.topic not in TRIGGER_TOPICS:
        raise Unprocessable(
            "unknown_topic", f"topic is one of {', '.join(TRIGGER_TOPICS)}", "topic"
        )
    condition.check(body.condition)
    if body.once_per is not None:
        condition.check_path(body.once_per, "once_per")
    keys = sorted({action.message_type for action in body.actions})
    types = await message_types.types_by_key(session, sponsor_id, keys)
    for i, action in enumerate(body.actions):
        where = f"actions.{i}"
        message_type = types.get(action.message_type)
        if message_type is None:
            raise Unprocessable(
                "unknown_message_type",
                f"no message type '{action.message_type}'",
                f"{where}.message_type",
            )
        _check_recipient(action.recipient, f"{where}.recipient")
        if action.recipient == "team" and not message_type.default_recipients:
            raise Unprocessable(
                "missing_recipient",
                f"'team' is the default recipients of '{message_type.key}', and it has none",
                f"{where}.recipient",
            )
        declared = {v["name"] for v in message_type.variables}
        for name, path in action.data.items():
            if name not in declared:
                raise Unprocessable(
                    "invalid_message_data",
                    f"'{name}' is not a variable of '{message_type.key}'",
                    f"{where}.data.{name}",
                )
            condition.check_path(path, f"{where}.data.{name}")


def _check_recipient(recipient: str, where: str) -> None:
    if recipient in ("lead", "team"):
        return
    if recipient.startswith("event:"):
        condition.check_path(recipient.removeprefix("event:"), where)
        return
    try:
        normalize_email(recipient)
    except ValueError:
        raise Unprocessable(
            "invalid_recipient",
            "a recipient is 'lead', 'team', 'event:<path>' or an address",
            where,
        ) from None


async def create(session: AsyncSession, sponsor_id: str, body: TriggerRuleIn) -> TriggerRule:
    await check(session, sponsor_id, body)
    rule = TriggerRule(id=uuid.uuid4(), sponsor_id=sponsor_id)
    _assign(rule, body)
    await repository.add_rule(session, rule)
    return rule


async def replace(
    session: AsyncSession, sponsor_id: str, rule_id: uuid.UUID, body: TriggerRuleIn
) -> TriggerRule:
    await check(session, sponsor_id, body)
    rule = await repository.get_rule(session, sponsor_id, rule_id)
    _assign(rule, body)
    rule.updated_at = func.now()
    await session.flush()
    return rule


def _assign(rule: TriggerRule, body: TriggerRuleIn) -> None:
    rule.name = body.name
    rule.topic = body.topic
    rule.condition = body.condition
    rule.actions = [action.model_dump(mode="json") for action in body.actions]
    rule.enabled = body.enabled
    rule.once_per = body.once_per


# Applying rules ------------------------------------------------------------------


async def apply(session: AsyncSession, settings: Settings, events: Sequence[Incoming]) -> int:
    """Fire every enabled rule each event meets, once per (rule, event); how many fired.

    A few statements per polled batch, not per event: the rules, every firing
    claimed at once, and each sponsor's messages queued together.
    """
    rules = await repository.enabled_rules(session, ((e.sponsor_id, e.topic) for e in events))
    by_key: dict[tuple[str, str], list[TriggerRule]] = {}
    for rule in rules:
        by_key.setdefault((rule.sponsor_id, rule.topic), []).append(rule)
    # In event order, each (rule, firing key) once: the first event to meet it fires.
    candidates: dict[tuple[uuid.UUID, str], tuple[TriggerRule, Incoming]] = {}
    for event in events:
        for rule in by_key.get((event.sponsor_id, event.topic), ()):
            # A rule is about changes made after it exists: a new consumer group or a
            # backlog must not mail every lead that was hot before the rule was saved.
            if event.changed_at is not None and event.changed_at < rule.created_at:
                continue
            if condition.matches(rule.condition, event.view):
                candidates.setdefault((rule.id, _firing_key(rule, event)), (rule, event))
    claimed = await repository.claim_firings(session, list(candidates))
    fired = [pair for key, pair in candidates.items() if key in claimed]
    by_sponsor: dict[str, list[tuple[TriggerRule, Incoming]]] = {}
    for rule, event in fired:
        by_sponsor.setdefault(rule.sponsor_id, []).append((rule, event))
    for sponsor_id, pairs in by_sponsor.items():
        await _queue_actions(session, settings, sponsor_id, pairs)
    return len(fired)


def _firing_key(rule: TriggerRule, event: Incoming) -> str:
    """What a rule fires once for: the event, or the value at ``once_per`` (a lead
    that stays hot meets a "qualified" condition on every later update)."""
    if rule.once_per is not None:
        value = condition.lookup(event.view, rule.once_per)
        if value is not None:
            return f"{rule.once_per}={value}"[:100]
    return event.event_id


async def _queue_actions(
    session: AsyncSession,
    settings: Settings,
    sponsor_id: str,
    fired: Sequence[tuple[TriggerRule, Incoming]],
) -> None:
    """Every action's message of a sponsor's firings, queued together; if the type
    refuses one, each in a savepoint of its own: one that cannot be sent (no address
    in the event, an address too long to be one, data the type refuses) is logged
    and the others go. The firings stay claimed either way, so a replay does not
    retry them."""
    labelled: list[tuple[str, MessageIn]] = []
    for rule, event in fired:
        for i, action in enumerate(TriggerActionIn.model_validate(a) for a in rule.actions):
            label = f"trigger rule {rule.id} action {i} on event {event.event_id}"
            try:
                labelled.append((label, _message(rule, action, event)))
            except (ClientError, ValidationError) as exc:
                log.warning("%s not sent: %s", label, exc)
    if not labelled:
        return
    try:
        async with session.begin_nested():
            await messages.queue(session, settings, sponsor_id, [m for _, m in labelled], None)
    except (ClientError, ValidationError):
        # One of them is refused: each alone tells which, and the others go.
        for label, message in labelled:
            try:
                async with session.begin_nested():
                    await messages.queue(session, settings, sponsor_id, [message], None)
            except (ClientError, ValidationError) as exc:
                log.warning("%s not sent: %s", label, exc)


def _message(rule: TriggerRule, action: TriggerActionIn, event: Incoming) -> MessageIn:
    data = {name: condition.lookup(event.view, path) for name, path in action.data.items()}
    return MessageIn(
        type=action.message_type,
        to=_recipient(action.recipient, event),
        data={name: value for name, value in data.items() if value is not None},
        tags={"trigger_rule": str(rule.id), "event_id": event.event_id[:256]},
    )


def _recipient(recipient: str, event: Incoming) -> str | None:
    """The address to send to; None for the type's default recipients (the team)."""
    if recipient == "team":
        return None
    if recipient == "lead":
        path = "email" if event.topic == TOPIC_LEADS else "data.email"
    elif recipient.startswith("event:"):
        path = recipient.removeprefix("event:")
    else:
        return recipient
    address = condition.lookup(event.view, path)
    if not isinstance(address, str) or not address:
        raise Unprocessable("missing_recipient", f"the event has no address at '{path}'", path)
    return address
