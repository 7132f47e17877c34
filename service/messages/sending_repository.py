"""The sender's statements about messages: one round trip each per polled batch.

Load what a batch sends (``messages_to_send``: each message with its type,
sponsor, suppressions and preference), claim provider batches
(``claim_send_batches``), record outcomes (``record_outcomes``) and note why a
message waits (``note_retry``). What the API reads and writes is in
``repository``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import and_, any_, func, literal_column, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import Label

from service import db
from service.models import (
    Message,
    MessageType,
    RecipientPreference,
    Sponsor,
    Template,
    TemplateVersion,
)


async def latest_template(session: AsyncSession, template_id: uuid.UUID) -> TemplateVersion | None:
    """The latest version of a type's template (None if the template is gone)."""
    return await session.scalar(
        select(TemplateVersion)
        .join(Template, Template.id == TemplateVersion.template_id)
        .where(Template.id == template_id, TemplateVersion.version == Template.latest_version)
    )


# Marketing and notification messages honour every suppression that applies to
# the sponsor, except that a message of another preference category looks past a
# marketing opt-out made in the preference centre (source ``preferences``), so
# opting out of one category stops that one only; transactional messages honour
# only bounces, complaints and the global list. Whether suppression ``s`` applies:
_APPLIES = """(s.sponsor_id IS NULL
           OR (s.sponsor_id = messages.sponsor_id
               AND (coalesce(message_types.category, messages.template ->> 'category')
                        <> 'transactional'
                    OR s.reason IN ('hard_bounce', 'complaint'))
               AND NOT (coalesce(message_types.preference_category, 'marketing') <> 'marketing'
                        AND s.reason = 'unsubscribed'
                        AND coalesce(s.source, '') = 'preferences')))"""

_SUPPRESSED: Label[bool] = literal_column(f"""EXISTS (
    SELECT 1 FROM suppressions s
    WHERE s.email = messages.to_email
      AND {_APPLIES}
)""").label("suppressed")  # noqa: S608 - only the fixed rule is formatted in

# The message's copies (cc, bcc) that the same rules stop, in the same round trip.
_BLOCKED: Label[list[str]] = literal_column(f"""ARRAY(
    SELECT DISTINCT s.email FROM suppressions s
    WHERE s.email = ANY(messages.cc || messages.bcc)
      AND {_APPLIES}
)""").label("blocked")  # noqa: S608


@dataclass(frozen=True, slots=True)
class SendChecks:
    """What stands between a message and its recipient: suppressions, and the
    recipient's preference for the type's category (None: no row, the defaults)."""

    suppressed: bool
    opted_out: bool | None
    frequency: str | None
    format: str | None


@dataclass(frozen=True, slots=True)
class ToSend:
    """A ``queued`` message with what it is sent as, and what stands in its way."""

    message: Message
    message_type: MessageType | None  # None: a one-off message with its own template
    sponsor: Sponsor
    checks: SendChecks
    # Its copies that must not be sent (suppressed by the message's rules).
    blocked: frozenset[str] = frozenset()


async def messages_to_send(session: AsyncSession, message_ids: Sequence[uuid.UUID]) -> list[ToSend]:
    """Those of the messages still ``queued``, each with its type, sponsor, suppression
    and its recipient's preference for the type's category, in one round trip; with
    them every member still ``queued`` of a send batch one of them was claimed into,
    as a batch is sent again whole."""
    preference = RecipientPreference
    # An array computed once (an InitPlan), so each arm of the OR below is an index
    # scan: a subquery there would read every message instead.
    claimer = aliased(Message)
    claimed = func.array(
        select(claimer.send_batch)
        .where(
            claimer.id.in_(message_ids),
            claimer.status == "queued",
            claimer.send_batch.is_not(None),
        )
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            Message,
            MessageType,
            Sponsor,
            _SUPPRESSED,
            preference.opted_out,
            preference.frequency,
            preference.format,
            _BLOCKED,
        )
        .outerjoin(MessageType, MessageType.id == Message.type_id)
        .join(Sponsor, Sponsor.id == Message.sponsor_id)
        .outerjoin(
            preference,
            and_(
                preference.sponsor_id == Message.sponsor_id,
                preference.email == Message.to_email,
                preference.category == MessageType.preference_category,
            ),
        )
        .where(
            Message.status == "queued",
            or_(
                Message.id.in_(message_ids),
                and_(Message.send_batch.is_not(None), Message.send_batch == any_(claimed)),
            ),
        )
    )
    return [
        ToSend(
            row[0],
            row[1],
            row[2],
            SendChecks(bool(row[3]), row[4], row[5], row[6]),
            frozenset(row[7] or ()),
        )
        for row in rows
    ]


# Only rows still unclaimed: a message claimed by another copy meanwhile is that
# copy's batch (and is sent again with it, never in a second one). On the driver:
# it commits alone, one round trip, before the request it fixes.
_CLAIM_BATCHES = db.DriverStatement.of(
    text("""
UPDATE messages AS m SET send_batch = c.key
FROM unnest(CAST(:ids AS uuid[]), CAST(:keys AS text[])) AS c(id, key)
WHERE m.id = c.id AND m.status = 'queued' AND m.send_batch IS NULL
RETURNING m.id
""")
)


async def claim_send_batches(driver: db.Driver, keys: dict[uuid.UUID, str]) -> set[uuid.UUID]:
    """Claim each message into its send batch (message id → batch key), committed;
    the ids claimed."""
    if not keys:
        return set()
    rows = await driver.fetch(_CLAIM_BATCHES, {"ids": list(keys), "keys": list(keys.values())})
    return {uuid.UUID(str(row[0])) for row in rows}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a message: ``sent`` (with the provider's id), ``failed`` or
    ``suppressed`` (with the reason)."""

    message_id: uuid.UUID
    status: str
    provider_message_id: str | None = None
    error: str | None = None
    links: Sequence[str] = ()


# A provider event that overtook this (kept by the ingester as a first time
# while the row was still queued) decides the status a sent message starts in.
_RECORD = text("""
UPDATE messages AS m
SET status = CASE WHEN o.status <> 'sent' THEN o.status
                  WHEN m.complained_at IS NOT NULL THEN 'complained'
                  WHEN m.bounced_at IS NOT NULL THEN 'bounced'
                  WHEN m.clicked_at IS NOT NULL THEN 'clicked'
                  WHEN m.opened_at IS NOT NULL THEN 'opened'
                  WHEN m.delivered_at IS NOT NULL THEN 'delivered'
                  ELSE 'sent' END,
    provider_message_id = o.provider_message_id, last_error = o.error,
    links = CAST(o.links AS jsonb),
    sent_at = CASE WHEN o.status = 'sent' THEN now() END, updated_at = now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]),
            CAST(:provider_ids AS text[]), CAST(:errors AS text[]), CAST(:links AS text[]))
     AS o(id, status, provider_message_id, error, links)
WHERE m.id = o.id AND m.status = 'queued'
RETURNING m.id
""")


async def record_outcomes(session: AsyncSession, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
    """Move ``queued`` messages to their outcomes, each with the targets of its tracked
    links (by position); the ids moved (another copy may have recorded the rest)."""
    if not outcomes:
        return set()
    rows = await session.execute(
        _RECORD,
        {
            "ids": [o.message_id for o in outcomes],
            "statuses": [o.status for o in outcomes],
            "provider_ids": [o.provider_message_id for o in outcomes],
            "errors": [o.error for o in outcomes],
            "links": [orjson.dumps(list(o.links)).decode() for o in outcomes],
        },
    )
    return {row[0] for row in rows}


_NOTE_RETRY = text("""
UPDATE messages SET last_error = CAST(:error AS text), updated_at = now()
WHERE id = :id AND status = 'queued'
""")


async def note_retry(session: AsyncSession, message_id: uuid.UUID, error: str) -> None:
    """A message left ``queued`` for a later attempt: why it waits, shown as ``last_error``."""
    await session.execute(_NOTE_RETRY, {"id": message_id, "error": error})
