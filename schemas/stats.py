"""HTTP bodies of the stats routes (campaign figures, per-link clicks, timeline, analysts).

Rates are percentages rounded to two decimals, null when the denominator is 0:

* ``delivery_rate`` = delivered / sent
* ``bounce_rate`` = bounced (hard) / sent
* ``open_rate`` = opened (unique) / delivered
* ``click_rate`` = clicked (unique) / delivered
* ``click_to_open_rate`` = clicked / opened
* ``complaint_rate`` = complained / delivered
* ``unsubscribe_rate`` = unsubscribed / delivered
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

FIGURES = (
    "pending",
    "sent",
    "delivered",
    "bounced",
    "complained",
    "failed",
    "suppressed",
    "cancelled",
    "unsubscribed",
    "opened",
    "opens",
    "human_opened",
    "clicked",
    "clicks",
    "human_clicked",
)

RATES = (
    "delivery_rate",
    "open_rate",
    "click_rate",
    "click_to_open_rate",
    "bounce_rate",
    "complaint_rate",
    "unsubscribe_rate",
)


class Figures(BaseModel):
    recipients: int
    pending: int
    sent: int
    delivered: int
    bounced: int
    complained: int
    failed: int
    suppressed: int
    cancelled: int
    unsubscribed: int
    opened: int
    opens: int
    human_opened: int
    clicked: int
    clicks: int
    human_clicked: int
    delivery_rate: float | None
    open_rate: float | None
    click_rate: float | None
    click_to_open_rate: float | None
    bounce_rate: float | None
    complaint_rate: float | None
    unsubscribe_rate: float | None


class LinkStats(BaseModel):
    position: int
    url: str
    clicks: int
    human_clicks: int


class TimelinePoint(BaseModel):
    at: datetime
    delivered: int
    bounced: int
    complained: int
    unsubscribed: int
    opens: int
    human_opens: int
    clicks: int
    human_clicks: int


class CampaignStatsOut(Figures):
    campaign_id: uuid.UUID
    status: str
    total_recipients: int
    links: list[LinkStats]
    timeline: list[TimelinePoint] | None = None


class AnalystRow(Figures):
    campaign_id: uuid.UUID
    sponsor_id: str
    event_id: str | None
    name: str
    status: str
    created_at: datetime


class AnalystOut(BaseModel):
    items: list[AnalystRow]
    totals: Figures


class UnmatchedCount(BaseModel):
    provider: str
    reason: str
    count: int


class UnmatchedEvent(BaseModel):
    event_id: str
    provider: str
    type: str
    reason: str
    email_id: str | None
    occurred_at: datetime
    recorded_at: datetime


class UnmatchedEventsOut(BaseModel):
    """Provider events kept without a delivery (see ``docs/tracking.md``): how many,
    why none matched, and the newest of them."""

    total: int
    by_reason: list[UnmatchedCount]
    recent: list[UnmatchedEvent]


class ReportLinkIn(BaseModel):
    """How long a report share link opens the page: 7 days unless asked, 30 at most."""

    ttl_seconds: int | None = Field(default=None, ge=60, le=30 * 86400)


class ReportLinkOut(BaseModel):
    url: str
    expires_at: datetime
