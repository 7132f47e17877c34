"""HTTP request and response bodies of the v1 API."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

T = TypeVar("T")

SponsorId = str
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

AudienceType = Literal["all", "hot", "warm", "cold", "new", "contacted"]
IntentLevel = Literal["hot", "warm", "cold"]
CampaignStatus = Literal[
    "draft", "scheduled", "queued", "sending", "paused", "sent", "cancelled", "failed"
]
DeliveryStatus = Literal[
    "pending", "sent", "delivered", "bounced", "complained", "failed", "suppressed", "cancelled"
]


# Free-form JSON objects (campaign metadata, lead attributes) are bounded as a whole.
MAX_FREE_JSON_BYTES = 16_384


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise ValueError("must be plain JSON (no NaN or Infinity)") from None
    if len(encoded.encode()) > MAX_FREE_JSON_BYTES:
        raise ValueError(f"must be at most {MAX_FREE_JSON_BYTES} bytes as JSON")
    return value


Key = Annotated[str, Field(max_length=100)]
FreeJson = Annotated[dict[Key, Any], Field(max_length=100), AfterValidator(_bounded_json)]
Tag = Annotated[str, Field(min_length=1, max_length=100)]


def _plausible_time(value: datetime) -> datetime:
    # Years far out (0001, 9999) overflow the database's and clients' date handling.
    if not 2000 <= value.year <= 2200:
        raise ValueError("must be between the years 2000 and 2200")
    return value


SendAt = Annotated[AwareDatetime, AfterValidator(_plausible_time)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Page(BaseModel, Generic[T]):
    """Every list: the items and the cursor of the next page (null on the last)."""

    items: list[T]
    next_cursor: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


class SponsorIn(_Body):
    name: str = Field(min_length=1, max_length=200)
    from_email: str = Field(min_length=3, max_length=320)
    from_name: str | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    postal_address: str | None = Field(default=None, max_length=500)
    can_send_messages: bool = True
    hourly_send_cap: int | None = Field(default=None, ge=1, le=10_000_000)


class SponsorOut(BaseModel):
    id: str
    name: str
    from_email: str
    from_name: str | None
    reply_to: str | None
    postal_address: str | None
    can_send_messages: bool
    hourly_send_cap: int | None
    created_at: datetime
    updated_at: datetime


class LeadIn(BaseModel):
    """One lead of a bulk upsert; validated row by row so one bad row rejects only itself."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    company: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=200)
    intent_level: IntentLevel | None = None
    intent_score: int | None = Field(default=None, ge=0, le=100)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    follow_up_status: str = Field(default="new", min_length=1, max_length=40)
    event_id: str | None = Field(default=None, max_length=64)
    attributes: FreeJson = Field(default_factory=dict)


class BulkLeadsIn(_Body):
    leads: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)


class RejectedRow(BaseModel):
    index: int
    code: str
    message: str
    field: str | None = None


class BulkLeadsOut(BaseModel):
    inserted: int
    updated: int
    rejected: list[RejectedRow]


class CampaignIn(_Body):
    name: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=998)
    message_body: str = Field(min_length=1, max_length=200_000)
    html_body: str | None = Field(default=None, max_length=500_000)
    audience_type: AudienceType = "all"
    event_id: str | None = Field(default=None, max_length=64)
    metadata: FreeJson = Field(default_factory=dict)
    draft: bool = False
    send_at: SendAt | None = Field(
        default=None, description="schedule for later (timezone required; stored as UTC)"
    )


class ScheduleIn(_Body):
    send_at: SendAt


class CampaignOut(BaseModel):
    id: uuid.UUID
    sponsor_id: str
    name: str
    subject: str
    message_body: str | None
    html_body: str | None
    audience_type: str
    event_id: str | None
    metadata: dict[str, Any]
    status: CampaignStatus
    status_reason: str | None
    total_recipients: int
    send_at: datetime | None
    send_round: int
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    completed_at: datetime | None


class RetryFailedOut(BaseModel):
    retried: int
    campaign: CampaignOut


class DeliveryOut(BaseModel):
    id: int
    lead_id: int
    recipient_email: str
    status: DeliveryStatus
    provider_message_id: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class CampaignStatsOut(BaseModel):
    campaign_id: uuid.UUID
    status: CampaignStatus
    total_recipients: int
    pending: int
    sent: int
    failed: int
    suppressed: int
    cancelled: int
