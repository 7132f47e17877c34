"""Kafka event contracts of ``leads.v1``: upstream lead capture → lead sync.

Keyed ``{sponsor_id}:{email}``. Each event carries the whole lead as upstream
holds it and the time upstream last changed it (``updated_at``); lead sync
keeps the newest state per (sponsor, email), so events may arrive twice or out
of order. Exported as JSON Schema with ``campaignctl export-schemas DIR``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from schemas.events import TOPIC_LEADS

__all__ = ["TOPIC_LEADS", "LeadDeleted", "LeadEvent", "LeadUpserted", "lead_events"]


class _LeadEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, max_length=100, description="unique per message")
    sponsor_id: str = Field(min_length=1, max_length=64)
    email: str = Field(min_length=3, max_length=320)
    updated_at: AwareDatetime = Field(description="when upstream changed the lead")


class LeadUpserted(_LeadEvent):
    """The lead as upstream holds it now; fields not sent are cleared."""

    type: Literal["lead.upserted"] = "lead.upserted"
    name: str | None = Field(default=None, max_length=200)
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    company: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=200)
    intent_level: Literal["hot", "warm", "cold"] | None = None
    intent_score: int | None = Field(default=None, ge=0, le=100)
    tags: list[str] = Field(default_factory=list, max_length=50)
    follow_up_status: str = Field(default="new", min_length=1, max_length=40)
    event_id: str | None = Field(default=None, max_length=64, description="the expo the lead met")
    attributes: dict[str, Any] = Field(default_factory=dict)


class LeadDeleted(_LeadEvent):
    """Upstream deleted the lead; an older upsert must not bring it back."""

    type: Literal["lead.deleted"] = "lead.deleted"


LeadEvent = Annotated[LeadUpserted | LeadDeleted, Field(discriminator="type")]
lead_events: TypeAdapter[LeadUpserted | LeadDeleted] = TypeAdapter(LeadEvent)
