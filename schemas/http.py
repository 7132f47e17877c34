"""HTTP request and response bodies of the v1 API."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from schemas.ab import MAX_VARIANTS, ABTestIn, VariantIn
from schemas.providers import ProviderChoice
from schemas.types import BigIntId, IntVersion, StoredJson, one_address

T = TypeVar("T")

SponsorId = str
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

AudienceType = Literal["all", "hot", "warm", "cold", "new", "contacted", "custom"]
IntentLevel = Literal["hot", "warm", "cold"]
CampaignStatus = Literal[
    "draft",
    "scheduled",
    "queued",
    "testing",
    "waiting_for_winner",
    "sending",
    "paused",
    "sent",
    "cancelled",
    "failed",
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


class Body(BaseModel):
    """A request body: unknown fields are refused, strings stripped."""

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


def _one_line(value: str | None) -> str | None:
    """Header fields: a CR or LF would let a value inject headers."""
    if value is not None and ("\r" in value or "\n" in value or "\x00" in value):
        raise ValueError("must be a single line (no CR, LF or NUL)")
    return value


class SponsorIn(Body):
    name: str = Field(min_length=1, max_length=200)
    from_email: str = Field(min_length=3, max_length=320)
    from_name: str | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    postal_address: str | None = Field(default=None, max_length=500)
    can_send_messages: bool = True
    hourly_send_cap: int | None = Field(default=None, ge=1, le=10_000_000)
    # The sponsor's own provider account (docs/providers.md); null: ``EMAIL_PROVIDER``.
    provider: ProviderChoice | None = None

    _single_line = field_validator("name", "from_email", "from_name", "reply_to")(_one_line)
    _one_address = field_validator("from_email", "reply_to")(one_address)


class SponsorOut(BaseModel):
    id: str
    name: str
    from_email: str
    from_name: str | None
    reply_to: str | None
    postal_address: str | None
    can_send_messages: bool
    hourly_send_cap: int | None
    provider: ProviderChoice | None
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


class BulkLeadsIn(Body):
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


class CampaignIn(Body):
    """Inline content (``subject`` + ``message_body`` and/or ``html_body``) or a template."""

    name: str = Field(min_length=1, max_length=200)
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    message_body: str | None = Field(
        default=None, min_length=1, max_length=200_000, description="plain text or Markdown"
    )
    html_body: str | None = Field(
        default=None, max_length=500_000, description="replaces the layout's content block"
    )
    text_body: str | None = Field(
        default=None, max_length=200_000, description="plain-text part (derived when absent)"
    )
    template_id: uuid.UUID | None = None
    template_version: IntVersion | None = Field(default=None, description="default: latest")
    tracking_enabled: bool = True
    audience_type: AudienceType = "all"
    audience_filter: dict[str, Any] | None = Field(
        default=None, description="with audience_type 'custom': the JSON filter tree"
    )
    event_id: str | None = Field(default=None, max_length=64)
    metadata: FreeJson = Field(default_factory=dict)
    draft: bool = False
    send_at: SendAt | None = Field(
        default=None, description="schedule for later (timezone required; stored as UTC)"
    )
    variants: list[VariantIn] | None = Field(
        default=None, max_length=MAX_VARIANTS, description="A/B test: 2 to 6, with ab_test"
    )
    ab_test: ABTestIn | None = None


class ScheduleIn(Body):
    send_at: SendAt


class CampaignOut(BaseModel):
    id: uuid.UUID
    sponsor_id: str
    name: str
    subject: str
    message_body: str | None
    html_body: str | None
    text_body: str | None
    template_id: uuid.UUID | None
    template_version: int | None
    tracking_enabled: bool
    audience_type: str
    audience_filter: StoredJson | None = None
    event_id: str | None
    # The ORM model keeps it as ``metadata_`` (``metadata`` is SQLAlchemy's own).
    metadata: StoredJson = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    status: CampaignStatus
    status_reason: str | None
    total_recipients: int
    send_at: datetime | None
    send_round: int
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    completed_at: datetime | None
    ab_test: StoredJson | None = None
    ab_decision: StoredJson | None = None


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


class SendTestIn(Body):
    emails: list[Annotated[str, Field(max_length=320)]] = Field(min_length=1, max_length=10)
    lead_id: BigIntId | None = Field(default=None, description="personalize as this lead")


class SendTestOut(BaseModel):
    request_id: uuid.UUID
    recipients: list[str]


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


# ---------------------------------------------------------------- audiences, leads, suppressions

SuppressionReason = Literal["unsubscribed", "hard_bounce", "complaint", "manual"]


class LeadOut(BaseModel):
    id: int
    email: str
    name: str | None
    first_name: str | None
    last_name: str | None
    company: str | None
    title: str | None
    intent_level: str | None
    intent_score: int | None
    tags: list[str]
    follow_up_status: str
    event_id: str | None
    attributes: StoredJson
    created_at: datetime
    updated_at: datetime


class AudiencePreviewIn(Body):
    audience_type: AudienceType = "all"
    audience_filter: dict[str, Any] | None = None


class AudiencePreviewOut(BaseModel):
    """The live recipient count (suppressed addresses left out) and up to 10 of them."""

    count: int
    exact: bool = Field(
        description="false when the count is an estimate (a very broad audience on a busy database)"
    )
    error_bound: int = Field(
        default=0,
        description="an estimate is off by at most this many leads, with probability "
        "`confidence`; 0 when exact",
    )
    confidence: float = Field(
        default=1.0, description="how sure `count ± error_bound` holds the true count; 1 when exact"
    )
    sample: list[LeadOut]


class ImportRejectedRow(BaseModel):
    line: int = Field(description="1-based line of the CSV file (the header is line 1)")
    code: str
    message: str
    field: str | None = None


class LeadsImportOut(BaseModel):
    rows: int
    inserted: int
    updated: int
    rejected_count: int
    rejected: list[ImportRejectedRow] = Field(description="the first 1,000 rejected rows")


class SuppressionIn(Body):
    email: str = Field(min_length=3, max_length=320)
    reason: SuppressionReason = "manual"
    source: str | None = Field(default=None, max_length=100)


class SuppressionOut(BaseModel):
    id: int
    sponsor_id: str | None
    email: str
    reason: str
    source: str | None
    created_at: datetime
