"""Provider events that match no delivery: why, and what they still do.

A provider event finds its delivery by the ``delivery_id`` tag of the message,
and only when its other tags and its email id agree with that delivery
(``resolve``). One that does not is never dropped: it is logged in
``delivery_events`` with no delivery and the reason in its payload, counted in
``campaign_provider_events_unmatched_total{provider, reason}`` and listed for
admins (``GET /api/v1/stats/unmatched-events``). A hard bounce, a complaint or a
refusal still suppresses the address for every sponsor that sent to it: the
address must not be written to again, whether or not our row of that message
can be found.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.tracking import ProviderEvent, TrackingEvent
from service.tracking import repository
from service.tracking.repository import DeliveryRef

Reason = Literal["no_delivery_tag", "unknown_delivery", "campaign_mismatch", "email_id_mismatch"]
REASONS: tuple[Reason, ...] = (
    "no_delivery_tag",
    "unknown_delivery",
    "campaign_mismatch",
    "email_id_mismatch",
)


def delivery_tag(e: ProviderEvent) -> int | None:
    tag = e.tags.get("delivery_id", "")
    return int(tag) if tag.isdigit() else None


def resolve(
    e: TrackingEvent | ProviderEvent, by_id: dict[int, DeliveryRef]
) -> tuple[DeliveryRef | None, Reason | None]:
    """The event's delivery, or why there is none (provider events only have a reason)."""
    if isinstance(e, TrackingEvent):
        return by_id.get(e.delivery_id), None
    delivery_id = delivery_tag(e)
    if delivery_id is None:
        return None, "no_delivery_tag"
    ref = by_id.get(delivery_id)
    if ref is None:
        return None, "unknown_delivery"
    if e.tags.get("campaign_id") not in (None, str(ref.campaign_id)):
        return None, "campaign_mismatch"  # tags that contradict each other are not trusted
    if e.email_id and ref.provider_message_id not in (None, e.email_id):
        return None, "email_id_mismatch"  # about another message than this delivery's
    return ref, None


def suppression_of(e: ProviderEvent) -> tuple[str, str] | None:
    """(suppression reason, source) when the event means: never write to this address."""
    if e.type == "bounced" and (e.bounce_type or "").lower() == "permanent":
        return "hard_bounce", f"{e.provider}:bounced"
    if e.type == "complained":
        return "complaint", f"{e.provider}:complained"
    if e.type == "unsubscribed":
        return "unsubscribed", f"{e.provider}:unsubscribed"
    if e.type == "suppressed":
        # The provider refused to send: the address bounced or complained before,
        # possibly for another of its customers. Stop writing to it here too.
        return "hard_bounce", f"{e.provider}:suppressed"
    return None


async def suppressions_for(
    session: AsyncSession, events: Sequence[ProviderEvent]
) -> list[tuple[str | None, str, str, str]]:
    """Suppressions (sponsor, email, reason, source) for unmatched events' addresses,
    one per sponsor that sent to the address."""
    wanted = [(e, why) for e in events if e.recipients and (why := suppression_of(e))]
    if not wanted:
        return []
    emails = sorted({email for e, _ in wanted for email in e.recipients})
    senders: dict[str, list[str]] = defaultdict(list)
    for sponsor_id, email in await repository.sponsors_that_sent(session, emails):
        senders[email].append(sponsor_id)
    return [
        (sponsor_id, email, reason, source)
        for e, (reason, source) in wanted
        for email in e.recipients
        for sponsor_id in senders[email]
    ]
