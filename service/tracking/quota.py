"""The provider's quota, seen in webhooks: pause the campaigns it stopped.

A quota can show after the provider accepted the emails: Resend then reports
each as ``email.failed`` with a reason such as ``reached_daily_quota``. Every
later email of the campaign would fail the same way, so the campaign pauses at
once, as a 429 quota answer pauses it in the sender, its rows left pending for
a resume once the quota allows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.tracking import ProviderEvent, TrackingEvent
from service.campaigns import repository as campaigns
from service.tracking.repository import DeliveryRef

log = logging.getLogger(__name__)


def quota_reason(event: TrackingEvent | ProviderEvent) -> str | None:
    """``event``'s quota reason when it is a failure for a quota, else None."""
    if not isinstance(event, ProviderEvent) or event.type != "failed":
        return None
    detail = (event.detail or "").strip()
    return detail if "quota" in detail.lower() else None


async def pause_for_quota(
    session: AsyncSession,
    events: Iterable[tuple[TrackingEvent | ProviderEvent, DeliveryRef | None]],
) -> list[uuid.UUID]:
    """Pause the running campaigns of the quota failures among ``events``; their ids."""
    reasons: dict[uuid.UUID, str] = {}
    for event, ref in events:
        reason = quota_reason(event)
        if reason is not None and ref is not None:
            reasons.setdefault(ref.campaign_id, reason)
    paused: list[uuid.UUID] = []
    for campaign_id, reason in sorted(reasons.items()):
        if await campaigns.auto_pause(session, campaign_id, f"provider quota: {reason}"):
            log.warning("campaign %s paused: provider quota (%s)", campaign_id, reason)
            paused.append(campaign_id)
    return paused
