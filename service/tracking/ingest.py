"""Ingestion: tracking and provider events → event log, delivery rows, counters.

``ingest(session, events)`` handles one batch in the caller's transaction:

1. resolve each event's delivery (ours carry its id; the provider's echo the
   ``delivery_id`` tag of the message), and drop opens/clicks of campaigns
   with tracking off; a provider event that matches no delivery is kept with
   its reason (``unmatched``);
2. flag clicks within ``TRACKING_MACHINE_CLICK_SECONDS`` of sending as machine;
3. insert into ``delivery_events`` with ``ON CONFLICT DO NOTHING`` — only the
   events that were new go further, so a replayed batch changes nothing;
4. merge per delivery (``merge``) with ``LEAST`` for first times and a forward-only
   status, so order of arrival does not matter (an open before ``delivered`` ends the same);
5. count only what changed (a first open, a new status) into ``campaign_stats``,
   the hourly timeline and per-link clicks; suppress hard bounces and complaints
   (for every sponsor that sent to the address when no delivery matched);
6. queue a ``delivery-events.v1`` message per status change (outbox, same
   transaction) and check the sponsor's reputation.
7. pause the campaign of a failure for the provider's quota (``quota``).

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
from service.messages import tracking as message_tracking
from service.settings import Settings
from service.stats import counters
from service.tracking import merge, quota, repository, unmatched
from service.tracking.repository import DeliveryRef

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    inserted: int
    paused: list[uuid.UUID]


async def ingest(
    session: AsyncSession,
    settings: Settings,
    events: list[TrackingEvent | ProviderEvent],
) -> IngestResult:
    """One batch in the caller's transaction, the steps of the module docstring in order.

    Events about transactional messages are handled first by their own ledger
    (``service.messages.tracking``); what matches no message comes back here.
    """
    events, about_messages = message_tracking.split(events)
    logged = 0
    if about_messages:
        logged, lost_messages = await message_tracking.ingest(session, settings, about_messages)
        events = [*events, *lost_messages]
    unique: dict[str, TrackingEvent | ProviderEvent] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    found = await _resolve(session, settings, list(unique.values()))  # 1, 2
    new_ids = await repository.insert_events(session, found.rows)  # 3
    new_rows = [row for row in found.rows if row["event_id"] in new_ids]
    fresh = [row for row in new_rows if row["delivery_id"] is not None]
    lost = [row for row in new_rows if row["delivery_id"] is None]
    for row in lost:
        metrics.PROVIDER_EVENTS_UNMATCHED.labels(row["_event"].provider, row["_reason"]).inc()
    merged = merge.merge(fresh, found.resolved)  # 4
    applied = await repository.apply_to_deliveries(session, merge.delivery_arrays(merged.changes))
    counted = _count(applied, found.by_id, merged)  # 5, 6
    await counters.bump(session, counted.stats)
    await counters.bump_hourly(session, merged.hourly)
    await repository.bump_link_clicks(session, merged.links)
    await _suppress(session, merged.suppress, lost)
    await outbox_rows.add(session, counted.outbox)
    paused = await quota.pause_for_quota(  # 7
        session, [(row["_event"], found.resolved[row["event_id"]]) for row in fresh]
    )
    for sponsor_id in sorted(counted.sponsors_to_check):
        paused += await reputation_guard(session, settings, sponsor_id)
    return IngestResult(inserted=len(new_ids) + logged, paused=paused)


@dataclass
class _Resolved:
    by_id: dict[int, DeliveryRef]
    # One row per event kept, as ``repository.insert_events`` takes them; the
    # ``_``-prefixed keys carry the event along for the later steps.
    rows: list[dict[str, Any]]
    resolved: dict[str, DeliveryRef | None]


async def _resolve(
    session: AsyncSession, settings: Settings, batch: list[TrackingEvent | ProviderEvent]
) -> _Resolved:
    """Steps 1–2: each event's delivery (two queries for the batch) and its event row."""
    ids = {e.delivery_id for e in batch if isinstance(e, TrackingEvent)}
    for e in batch:
        if isinstance(e, ProviderEvent) and (tag := unmatched.delivery_tag(e)) is not None:
            ids.add(tag)
    refs = await repository.deliveries(session, sorted(ids))
    by_id = {r.id: r for r in refs}
    positions = await repository.link_positions(
        session, [r.campaign_id for r in refs if r.tracking_enabled]
    )
    found = _Resolved(by_id=by_id, rows=[], resolved={})
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
        found.resolved[e.event_id] = ref
        found.rows.append(
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
    return found


@dataclass
class _Counted:
    # (campaign, stats shard) → counter name → increment.
    stats: dict[tuple[uuid.UUID, int], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    outbox: list[tuple[str, str, bytes]] = field(default_factory=list)
    sponsors_to_check: set[str] = field(default_factory=set)


def _count(
    applied: list[repository.Applied], by_id: dict[int, DeliveryRef], merged: merge.Merged
) -> _Counted:
    """Steps 5–6: count only what the update changed, queue a message per new status."""
    counted = _Counted()
    for a in applied:
        ref = by_id[a.id]
        change = merged.changes[a.id]
        s = counted.stats[(ref.campaign_id, counters.shard_of(ref.batch_no))]
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
                hour = when.replace(minute=0, second=0, microsecond=0)
                merged.hourly[(ref.campaign_id, hour)][name] += 1
        if a.status != a.old_status:
            _count_status(s, a)
            if a.status in ("bounced", "complained"):
                counted.sponsors_to_check.add(ref.sponsor_id)
            counted.outbox.append(_status_message(a, ref))
    return counted


def _count_status(s: dict[str, int], a: repository.Applied) -> None:
    """Move a delivery between the sending counters when its status changed."""
    if a.status in ("failed", "suppressed"):
        s[a.status] += 1
        if a.old_status in ("sent", "delivered"):
            # The provider took it, then gave up: no longer sent, and
            # retry-failed counts it as sent again when it goes out.
            s["sent"] -= 1
    if a.old_status in ("failed", "suppressed"):
        s[a.old_status] -= 1


def _status_message(a: repository.Applied, ref: DeliveryRef) -> tuple[str, str, bytes]:
    """The ``delivery-events.v1`` outbox row announcing a delivery's new status."""
    message = DeliveryStatusChanged(
        event_id=f"{a.id}:{a.status}",
        delivery_id=a.id,
        campaign_id=ref.campaign_id,
        sponsor_id=ref.sponsor_id,
        status=a.status,
        previous_status=a.old_status,
        occurred_at=_status_time(a) or datetime.now().astimezone(),
    )
    return (TOPIC_DELIVERY_EVENTS, str(a.id), message.to_bytes())


async def _suppress(
    session: AsyncSession,
    suppress: list[tuple[str | None, str, str, str]],
    lost: list[dict[str, Any]],
) -> None:
    """Suppress what matched deliveries asked for, and for unmatched provider events
    the address at every sponsor that sent to it."""
    suppress = suppress + await unmatched.suppressions_for(
        session, [row["_event"] for row in lost if isinstance(row["_event"], ProviderEvent)]
    )
    await repository.add_suppressions(session, suppress)


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
