"""What happened to messages, for people: a message's history, a type's figures
and rates (the stats route, the analysts' view and the report page share them),
and the CSV of messages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service import exports
from service.messages import events_repository as repository
from service.messages.repository import MessageFilter, stream_messages
from service.models import Message
from service.stats import logic as stats

# Campaign stats' rates that have a meaning for messages (there is no unsubscribe here).
RATES = (
    "delivery_rate", "open_rate", "click_rate", "click_to_open_rate", "bounce_rate",
    "complaint_rate",
)  # fmt: skip

# Our event names as a person reads them; the provider's are already so.
_HISTORY_TYPE = {"open": "opened", "click": "clicked"}

_TYPE_HEADER = text(
    "SELECT id, key, category FROM message_types WHERE id = :id AND sponsor_id = :sponsor_id"
)


def history(message: Message, events: Iterable[Any]) -> list[dict[str, Any]]:
    """The message's life, oldest first: (scheduled,) queued, its outcome, then each event."""
    entries: list[dict[str, Any]] = [{"type": "queued", "at": message.created_at}]
    if message.send_at is not None:
        # Queued by its timer at its time, unless it is still waiting or was cancelled.
        entries = [{"type": "scheduled", "at": message.created_at}]
        if message.status == "cancelled":
            entries.append({"type": "cancelled", "at": message.updated_at})
        elif message.status != "scheduled":
            entries.append({"type": "queued", "at": message.send_at})
    if message.sent_at is not None:
        entries.append(
            {
                "type": "sent",
                "at": message.sent_at,
                "provider_message_id": message.provider_message_id,
            }
        )
    elif message.status in ("failed", "suppressed", "held", "digested"):
        entries.append(
            {"type": message.status, "at": message.updated_at, "error": message.last_error}
        )
    for event in events:
        payload = event.payload or {}
        entry: dict[str, Any] = {
            "type": _HISTORY_TYPE.get(event.type, event.type),
            "at": event.occurred_at,
            "machine": event.is_machine,
            "source": payload.get("source"),
            "error": payload.get("detail"),
        }
        if event.type == "click" and event.link_position is not None:
            links = message.links or []
            if event.link_position < len(links):
                entry["url"] = links[event.link_position]
        entries.append(entry)
    return entries


async def type_stats(
    connection: AsyncConnection, sponsor_id: str, type_id: uuid.UUID, timeline: str | None
) -> dict[str, Any] | None:
    """The body of ``GET …/message-types/{id}/stats``; None when the sponsor has no such
    type. The type's report page shows exactly this."""
    header = (
        await connection.execute(_TYPE_HEADER, {"id": type_id, "sponsor_id": sponsor_id})
    ).first()
    if header is None:
        return None
    figures = await repository.type_figures(connection, sponsor_id, type_id)
    points = await repository.type_timeline(connection, type_id, timeline) if timeline else None
    return {
        "type_id": type_id,
        "key": header.key,
        "category": header.category,
        **stats.with_rates(figures, RATES),
        "links": await repository.type_links(connection, type_id),
        "timeline": points,
    }


def analyst_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one row per type with its rates, the totals with theirs)."""
    summed = dict.fromkeys(repository.FIGURES, 0)
    for row in rows:
        for name in summed:
            summed[name] += int(row[name])
    return [stats.with_rates(row, RATES) for row in rows], stats.with_rates(summed, RATES)


ANALYST_COLUMNS = ("type_id", "sponsor_id", "key", "category", *repository.FIGURES, *RATES)

CSV_COLUMNS = (
    "id", "type", "to", "status", "provider_message_id", "last_error", "created_at", "sent_at",
    "delivered_at", "opened_at", "clicked_at", "bounced_at", "complained_at",
)  # fmt: skip


def messages_csv(
    engine: AsyncEngine, sponsor_id: str, where: MessageFilter
) -> AsyncIterator[bytes]:
    """Every message the filter selects as CSV bytes (newest first), streamed; every
    text cell neutralised for spreadsheets (``exports``)."""
    return exports.csv_stream(CSV_COLUMNS, stream_messages(engine, sponsor_id, where))
