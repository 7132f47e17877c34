"""The emails about an appointment: what each message row holds, and queueing them.

An email goes to the lead as a ``service.messages`` message: a message row and
its ``messages.v1`` outbox row in the caller's transaction, many in one
statement each (the timers role queues a batch of reminders at once).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_MESSAGES
from schemas.messages import MessageRequested
from service import outbox
from service.appointments import emails, repository
from service.appointments.invite import Invite, ics, uid_of
from service.appointments.links import Action, Links
from service.messages.repository import add_messages
from service.models import Appointment, MessageType
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class Config:
    """What the appointment rules take from the settings."""

    links: Links
    feedback_delay: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Config:
        delay = timedelta(seconds=settings.appointment_feedback_delay_seconds)
        return cls(Links.from_settings(settings), delay)


def invite_of(row: Appointment) -> Invite:
    """The invite as the row now says it."""
    details = row.details
    return Invite(
        uid=uid_of(row.sponsor_id, row.appointment_id),
        sequence=row.sequence,
        title=details["title"],
        start=row.start_at,
        end=row.end_at,
        time_zone=row.time_zone,
        organizer_email=details["host"]["email"],
        organizer_name=details["host"].get("name"),
        attendee_email=row.lead_email,
        attendee_name=details["lead"].get("name"),
        location=details.get("location"),
        join_url=details.get("join_url"),
        notes=details.get("notes"),
    )


def message(
    config: Config,
    row: Appointment,
    message_type: MessageType,
    method: str | None,
    moment: datetime,
    *,
    reminder: str | None = None,
) -> dict[str, Any]:
    """The message row of one email to the lead, invite attached when ``method`` is set."""
    invite = invite_of(row)
    reader_zone = row.details["lead"].get("time_zone") or row.time_zone
    attachments = []
    if method is not None:
        content = ics(invite, method=method, stamp=moment)
        attachments.append(
            {
                "filename": "invite.ics",
                "content_type": f"text/calendar; method={method}",
                "content": base64.b64encode(content).decode(),
            }
        )
    data = emails.data(invite, reader_zone, reminder=reminder)
    return {
        "id": uuid.uuid4(),
        "sponsor_id": row.sponsor_id,
        "type_id": message_type.id,
        "type_key": message_type.key,
        "to_email": row.lead_email,
        "data": data | _links(config, row, message_type.key),
        "reply_to": invite.organizer_email,
        "attachments": attachments,
        "tags": {"appointment_id": row.appointment_id, "sequence": str(row.sequence)},
        "status": "queued",
    }


def _links(config: Config, row: Appointment, type_key: str) -> dict[str, str]:
    """The reschedule and cancel links, in every email about an appointment still to come."""
    if type_key in (emails.CANCELLATION, emails.FEEDBACK):
        return {}
    return {
        f"{action}_url": config.links.url(action, row.sponsor_id, row.appointment_id)
        for action in Action
    }


async def queue(session: AsyncSession, messages: Sequence[dict[str, Any]]) -> None:
    """The message rows and their outbox rows, one statement each."""
    if not messages:
        return
    await add_messages(session, messages)
    await outbox.add(
        session,
        [
            (
                TOPIC_MESSAGES,
                str(m["id"]),
                MessageRequested(message_id=m["id"], sponsor_id=m["sponsor_id"]).to_bytes(),
            )
            for m in messages
        ],
    )


async def send(
    session: AsyncSession,
    config: Config,
    row: Appointment,
    type_key: str,
    method: str | None,
    moment: datetime,
) -> None:
    """Queue one email of the built-in type ``type_key`` to the lead."""
    message_type = await repository.ensure_type(
        session, row.sponsor_id, emails.type_values(type_key)
    )
    await queue(session, [message(config, row, message_type, method, moment)])
