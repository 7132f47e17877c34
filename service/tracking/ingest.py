"""Ingestion: tracking and provider events → event log, delivery rows, counters.

``ingest(session, events)`` handles one batch in the caller's transaction:

1. resolve each event's delivery (ours carry its id; the provider's echo the
   ``delivery_id`` tag of the message), and drop opens/clicks of campaigns
   with tracking off; a provider event that matches no delivery is kept with
   its reason (``unmatched``);
2. flag clicks within ``TRACKING_MACHINE_CLICK_SECONDS`` of sending as machine;
3. insert into ``delivery_events`` with ``ON CONFLICT DO NOTHING`` — only the
   events that were new go further, so a replayed batch changes nothing;
4. merge per delivery with ``LEAST`` for first times and a forward-only status,
   so order of arrival does not matter (an open before ``delivered`` ends the same);
5. count only what changed (a first open, a new status) into ``campaign_stats``,
   the hourly timeline and per-link clicks; suppress hard bounces and complaints
   (for every sponsor that sent to the address when no delivery matched);
6. queue a ``delivery-events.v1`` message per status change (outbox, same
   transaction) and check the sponsor's reputation.

Provider opens/clicks merge with ours without double counting: they may set
the first open/click (unique figures) but never add to totals, which come from
our own pixel and redirect only.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_DELIVERY_EVENTS
from schemas.tracking import DeliveryStatusChanged, ProviderEvent, TrackingEvent
from service import metrics
from service import outbox as outbox_rows
from service.campaigns import repository as campaigns
from service.settings import Settings
from service.stats import counters
from service.tracking import repository, unmatched
from service.tracking.repository import DeliveryRef

log = logging.getLogger(__name__)

# Provider event → the delivery status it implies (None: no status change).
_STATUS_OF = {
    "sent": "sent",
    "delivered": "delivered",
    "bounced": "bounced",
    "complained": "complained",
    "failed": "failed",
    "suppressed": "suppressed",
}


@dataclass
class _Change:
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


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


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


def _higher(a: str | None, b: str) -> str:
    if a is None:
        return b
    return b if _RANK.index(b) > _RANK.index(a) else a


@dataclass
class IngestResult:
    inserted: int
    paused: list[uuid.UUID]


async def ingest(
    session: AsyncSession,
    settings: Settings,
    events: list[TrackingEvent | ProviderEvent],
) -> IngestResult:
    unique: dict[str, TrackingEvent | ProviderEvent] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    batch = list(unique.values())

    ids = {e.delivery_id for e in batch if isinstance(e, TrackingEvent)}
    for e in batch:
        if isinstance(e, ProviderEvent) and (tag := unmatched.delivery_tag(e)) is not None:
            ids.add(tag)
    refs = await repository.deliveries(session, sorted(ids))
    by_id = {r.id: r for r in refs}
    positions = await repository.link_positions(
        session, [r.campaign_id for r in refs if r.tracking_enabled]
    )

    rows: list[dict[str, Any]] = []
    resolved: dict[str, DeliveryRef | None] = {}
    for e in batch:
        ref, reason = unmatched.resolve(e, by_id)
        kind = e.type
        engagement = kind in ("open", "click", "opened", "clicked")
        if engagement and ref is not None and not ref.tracking_enabled:
            continue  # tracking is off for this campaign
        if ref is None and reason is None:
            continue  # a hit of our own pixel or redirect whose delivery row is gone
        machine, position, payload = _details(e, ref, settings, positions)
        if reason is not None:
            payload["unmatched"] = reason
        resolved[e.event_id] = ref
        rows.append(
            {
                "event_id": e.event_id,
                "delivery_id": ref.id if ref else None,
                "campaign_id": ref.campaign_id if ref else None,
                "type": kind,
                "occurred_at": e.occurred_at,
                "link_position": position,
                "is_machine": machine is not None,
                "ip_hash": e.ip_hash if isinstance(e, TrackingEvent) else None,
                "payload": orjson.dumps(payload).decode(),
                "_machine": machine,
                "_event": e,
                "_reason": reason,
            }
        )
    new_ids = await repository.insert_events(session, rows)
    fresh = [row for row in rows if row["event_id"] in new_ids and row["delivery_id"] is not None]
    lost = [row for row in rows if row["event_id"] in new_ids and row["delivery_id"] is None]
    for row in lost:
        metrics.PROVIDER_EVENTS_UNMATCHED.labels(row["_event"].provider, row["_reason"]).inc()

    changes: dict[int, _Change] = defaultdict(_Change)
    hourly: dict[tuple[uuid.UUID, datetime], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    links: dict[tuple[uuid.UUID, int], tuple[int, int]] = {}
    suppress: list[tuple[str | None, str, str, str]] = []
    for row in fresh:
        e = row["_event"]
        ref = resolved[row["event_id"]]
        assert ref is not None
        change = changes[ref.id]
        at: datetime = e.occurred_at
        human = not row["is_machine"]
        hour = (ref.campaign_id, at.replace(minute=0, second=0, microsecond=0))
        kind = row["type"]
        if kind in ("open", "opened"):
            change.opened = _min(change.opened, at)
            if kind == "open":
                change.opens += 1
                hourly[hour]["opens"] += 1
                if human:
                    change.human_opened = _min(change.human_opened, at)
                    hourly[hour]["human_opens"] += 1
        elif kind in ("click", "clicked"):
            change.clicked = _min(change.clicked, at)
            if kind == "click":
                change.clicks += 1
                hourly[hour]["clicks"] += 1
                if human:
                    change.human_clicked = _min(change.human_clicked, at)
                    hourly[hour]["human_clicks"] += 1
                key = (ref.campaign_id, row["link_position"])
                total, humans = links.get(key, (0, 0))
                links[key] = (total + 1, humans + int(human))
        elif isinstance(e, ProviderEvent):
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
                suppress.append((ref.sponsor_id, ref.recipient_email, *why))
            if status is not None:
                change.status = _higher(change.status, status)

    ordered = sorted(changes)
    arrays: dict[str, list[Any]] = {
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
    applied = await repository.apply_to_deliveries(session, arrays)

    stats: dict[tuple[uuid.UUID, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    outbox: list[tuple[str, str, bytes]] = []
    sponsors_to_check: set[str] = set()
    for a in applied:
        ref = by_id.get(a.id) or next(r for r in refs if r.id == a.id)
        change = changes[a.id]
        s = stats[(ref.campaign_id, counters.shard_of(ref.batch_no))]
        s["opens"] += change.opens
        s["clicks"] += change.clicks
        s["opened"] += a.new_opened
        s["human_opened"] += a.new_human_opened
        s["clicked"] += a.new_clicked
        s["human_clicked"] += a.new_human_clicked
        for flag, when, name in (
            (a.new_delivered, a.delivered_at, "delivered"),
            (a.new_bounced, a.bounced_at, "bounced"),
            (a.new_complained, a.complained_at, "complained"),
        ):
            if flag and when is not None:
                s[name] += 1
                hourly[(ref.campaign_id, when.replace(minute=0, second=0, microsecond=0))][
                    name
                ] += 1
        if a.status != a.old_status:
            if a.status in ("failed", "suppressed"):
                s[a.status] += 1
                if a.old_status in ("sent", "delivered"):
                    # The provider took it, then gave up: no longer sent, and
                    # retry-failed counts it as sent again when it goes out.
                    s["sent"] -= 1
            if a.old_status in ("failed", "suppressed"):
                s[a.old_status] -= 1
            if a.status in ("bounced", "complained"):
                sponsors_to_check.add(ref.sponsor_id)
            message = DeliveryStatusChanged(
                event_id=f"{a.id}:{a.status}",
                delivery_id=a.id,
                campaign_id=ref.campaign_id,
                sponsor_id=ref.sponsor_id,
                status=a.status,
                previous_status=a.old_status,
                occurred_at=_status_time(a) or datetime.now().astimezone(),
            )
            outbox.append((TOPIC_DELIVERY_EVENTS, str(a.id), message.to_bytes()))

    await counters.bump(session, stats)
    await counters.bump_hourly(session, hourly)
    await repository.bump_link_clicks(session, links)
    suppress += await unmatched.suppressions_for(
        session, [row["_event"] for row in lost if isinstance(row["_event"], ProviderEvent)]
    )
    await repository.add_suppressions(session, suppress)
    await outbox_rows.add(session, outbox)
    paused: list[uuid.UUID] = []
    for sponsor_id in sorted(sponsors_to_check):
        paused += await reputation_guard(session, settings, sponsor_id)
    return IngestResult(inserted=len(new_ids), paused=paused)


def _status_time(a: repository.Applied) -> datetime | None:
    return {
        "delivered": a.delivered_at,
        "bounced": a.bounced_at,
        "complained": a.complained_at,
    }.get(a.status)


def _details(
    e: TrackingEvent | ProviderEvent,
    ref: DeliveryRef | None,
    settings: Settings,
    positions: dict[tuple[uuid.UUID, str], int],
) -> tuple[str | None, int | None, dict[str, Any]]:
    """(machine reason, link position, payload to keep) of one event."""
    if isinstance(e, TrackingEvent):
        machine = e.machine
        if (
            machine is None
            and e.type == "click"
            and ref is not None
            and ref.sent_at is not None
            and (e.occurred_at - ref.sent_at).total_seconds()
            < settings.tracking_machine_click_seconds
        ):
            machine = "early_click"
        payload: dict[str, Any] = {"source": "tracking"}
        if machine:
            payload["machine"] = machine
        return machine, e.position if e.type == "click" else None, payload
    position = None
    if e.link and ref is not None:
        position = positions.get((ref.campaign_id, e.link))
    payload = {"source": e.provider, "provider_type": e.provider_type, "email_id": e.email_id}
    if e.bounce_type:
        payload["bounce_type"] = e.bounce_type
    if e.detail:
        payload["detail"] = e.detail
    return None, position, payload


async def reputation_guard(
    session: AsyncSession, settings: Settings, sponsor_id: str
) -> list[uuid.UUID]:
    """Pause the sponsor's running campaigns when complaints or hard bounces pass the limits."""
    total, bounced, complained = await repository.sponsor_reputation(
        session, sponsor_id, settings.reputation_window
    )
    if total < settings.reputation_min_deliveries:
        return []
    reason = None
    if complained / total > settings.reputation_complaint_rate:
        reason = (
            f"reputation guard: complaint rate {complained / total:.2%} over the last {total} "
            f"deliveries (limit {settings.reputation_complaint_rate:.2%})"
        )
    elif bounced / total > settings.reputation_bounce_rate:
        reason = (
            f"reputation guard: hard-bounce rate {bounced / total:.2%} over the last {total} "
            f"deliveries (limit {settings.reputation_bounce_rate:.2%})"
        )
    if reason is None:
        return []
    paused = await campaigns.auto_pause_sponsor(session, sponsor_id, reason)
    if paused:
        log.warning("%s: paused %d campaign(s) of %s", reason, len(paused), sponsor_id)
    return paused
