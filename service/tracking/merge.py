"""Step 4 of ingestion: the new events of a batch, merged into one change per delivery.

First times merge with the earliest (``LEAST`` in SQL, ``_min`` here) and the
status only moves forward (``_RANK``), so the order of arrival does not matter.
Provider opens/clicks may set the first open/click but never add to totals:
those come from our own pixel and redirect only.

Plain Python on purpose: this runs once per event on the ingester's hot path;
``delivery_arrays`` turns the result into the arrays of one set-based update.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.tracking import ProviderEvent, TrackingEvent
from service.tracking import unmatched
from service.tracking.repository import DeliveryRef

# Provider event → the delivery status it implies (None: no status change).
_STATUS_OF = {
    "sent": "sent",
    "delivered": "delivered",
    "bounced": "bounced",
    "complained": "complained",
    "failed": "failed",
    "suppressed": "suppressed",
}

_RANK = [
    "pending",
    "cancelled",
    "sent",
    "delivered",
    "failed",
    "suppressed",
    "bounced",
    "complained",
]

# (campaign, clock hour) → counter name → increment.
Hourly = dict[tuple[uuid.UUID, datetime], dict[str, int]]


@dataclass
class Change:
    """What a batch's new events change on one delivery."""

    status: str | None = None
    delivered: datetime | None = None
    bounced: datetime | None = None
    complained: datetime | None = None
    opened: datetime | None = None
    human_opened: datetime | None = None
    clicked: datetime | None = None
    human_clicked: datetime | None = None
    opens: int = 0
    clicks: int = 0
    note: str | None = None
    _seen: list[str] = field(default_factory=list)


@dataclass
class Merged:
    """One batch's changes per delivery, plus what the events count outside them."""

    changes: dict[int, Change] = field(default_factory=lambda: defaultdict(Change))
    # Counted on arrival (totals are not first times, so not returned by the update).
    hourly: Hourly = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    # (campaign, link position) → (clicks, human clicks).
    links: dict[tuple[uuid.UUID, int], tuple[int, int]] = field(default_factory=dict)
    # (sponsor or None for all, email, reason, source), as ``add_suppressions`` takes them.
    suppress: list[tuple[str | None, str, str, str]] = field(default_factory=list)


def merge(rows: list[dict[str, Any]], resolved: dict[str, DeliveryRef | None]) -> Merged:
    """Merge the new, matched event rows (as built for ``insert_events``)."""
    merged = Merged()
    for row in rows:
        e = row["_event"]
        ref = resolved[row["event_id"]]
        assert ref is not None
        change = merged.changes[ref.id]
        kind = row["type"]
        if kind in ("open", "opened"):
            _open(merged, change, ref, e, kind, not row["is_machine"])
        elif kind in ("click", "clicked"):
            _click(merged, change, ref, e, kind, not row["is_machine"], row["link_position"])
        elif isinstance(e, ProviderEvent):
            _provider_event(merged, change, ref, e)
    return merged


def _open(
    merged: Merged,
    change: Change,
    ref: DeliveryRef,
    e: TrackingEvent | ProviderEvent,
    kind: str,
    human: bool,
) -> None:
    at = e.occurred_at
    change.opened = _min(change.opened, at)
    if kind == "open":
        change.opens += 1
        _count_hourly(merged, ref, at, "opens", human)
        if human:
            change.human_opened = _min(change.human_opened, at)


def _click(
    merged: Merged,
    change: Change,
    ref: DeliveryRef,
    e: TrackingEvent | ProviderEvent,
    kind: str,
    human: bool,
    position: int,
) -> None:
    at = e.occurred_at
    change.clicked = _min(change.clicked, at)
    if kind == "click":
        change.clicks += 1
        _count_hourly(merged, ref, at, "clicks", human)
        if human:
            change.human_clicked = _min(change.human_clicked, at)
        key = (ref.campaign_id, position)
        total, humans = merged.links.get(key, (0, 0))
        merged.links[key] = (total + 1, humans + int(human))


def _count_hourly(
    merged: Merged, ref: DeliveryRef, at: datetime, counter: str, human: bool
) -> None:
    """An own open or click in its clock hour; a human one also under ``human_<counter>``."""
    hour = merged.hourly[(ref.campaign_id, _hour(at))]
    hour[counter] += 1
    if human:
        hour[f"human_{counter}"] += 1


def _provider_event(merged: Merged, change: Change, ref: DeliveryRef, e: ProviderEvent) -> None:
    kind = e.type
    at = e.occurred_at
    status = _STATUS_OF.get(kind)
    if kind == "bounced" and (e.bounce_type or "").lower() != "permanent":
        change.note = f"transient bounce: {e.detail or e.bounce_type or 'unknown'}"[:500]
        status = None
    elif kind == "delivery_delayed":
        change.note = "delivery delayed"
    elif kind in ("failed", "suppressed"):
        change.note = f"{kind}: {e.detail or ''}"[:500]
    if status == "delivered":
        change.delivered = _min(change.delivered, at)
    elif status == "bounced":
        change.bounced = _min(change.bounced, at)
    elif status == "complained":
        change.complained = _min(change.complained, at)
    if (why := unmatched.suppression_of(e)) is not None:
        merged.suppress.append((ref.sponsor_id, ref.recipient_email, *why))
    if status is not None:
        change.status = _higher(change.status, status)


def delivery_arrays(changes: dict[int, Change]) -> dict[str, list[Any]]:
    """The changes as the column arrays ``repository.apply_to_deliveries`` takes."""
    ordered = sorted(changes)
    return {
        "ids": ordered,
        "statuses": [changes[i].status or "pending" for i in ordered],
        "delivered": [changes[i].delivered for i in ordered],
        "bounced": [changes[i].bounced for i in ordered],
        "complained": [changes[i].complained for i in ordered],
        "opened": [changes[i].opened for i in ordered],
        "human_opened": [changes[i].human_opened for i in ordered],
        "clicked": [changes[i].clicked for i in ordered],
        "human_clicked": [changes[i].human_clicked for i in ordered],
        "opens": [changes[i].opens for i in ordered],
        "clicks": [changes[i].clicks for i in ordered],
        "notes": [changes[i].note for i in ordered],
    }


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _higher(a: str | None, b: str) -> str:
    if a is None:
        return b
    return b if _RANK.index(b) > _RANK.index(a) else a
