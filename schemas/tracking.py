"""Kafka contracts for what happens after sending.

* ``tracking-events.v1`` (key: delivery id, or message id): opens and clicks
  seen by our own pixel and redirect. ``machine`` names why a hit looks automated (privacy
  proxy, link scanner, HEAD request, …) or is null for a person.
* ``provider-events.v1`` (key: the provider's event id): webhook events from the email
  provider, as received, with the fields the ingester maps them by.
* ``delivery-events.v1`` (key: delivery id): every status change of a
  delivery, for downstream consumers. Status only moves forward
  (``sent`` → ``delivered`` → ``bounced``/``complained``; ``failed``,
  ``suppressed``), so a consumer may keep the last one it saw.

Every event has an ``event_id``; consumers dedupe on it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class TrackingEvent(_Event):
    """An open (pixel) or a click (redirect) of one delivery, or of one transactional
    message (``message_id`` set, ``delivery_id`` 0)."""

    type: Literal["open", "click"]
    event_id: str = Field(min_length=8, max_length=100)
    delivery_id: int = Field(default=0, ge=0)
    message_id: uuid.UUID | None = None
    position: int = Field(default=0, ge=0)
    occurred_at: datetime
    machine: str | None = None
    ip_hash: str | None = None  # hex of a keyed hash (IP_HASH_SECRET); never the address


ProviderEventType = Literal[
    "sent",
    "delivered",
    "delivery_delayed",
    "bounced",
    "complained",
    "failed",
    "suppressed",
    "opened",
    "clicked",
    "scheduled",
    "received",
    "unsubscribed",
    "other",
]


class ProviderEvent(_Event):
    """One verified provider webhook, mapped to the fields the ingester needs."""

    type: ProviderEventType
    event_id: str = Field(min_length=1, max_length=100)
    provider: Literal["resend", "mailgun", "sendgrid"] = "resend"
    provider_type: str  # the provider's own name, e.g. ``email.bounced``
    email_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    occurred_at: datetime
    bounce_type: str | None = None  # Permanent | Transient | Undetermined
    link: str | None = None
    detail: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    # The provider's ``to``, only on bounces, complaints and refusals: it lets the
    # ingester suppress the address when the event matches no delivery row.
    recipients: list[str] = Field(default_factory=list, max_length=50)


DeliveryStatus = Literal[
    "pending", "sent", "delivered", "bounced", "complained", "failed", "suppressed", "cancelled"
]


class DeliveryStatusChanged(_Event):
    """A delivery moved to a new status (``delivery-events.v1``)."""

    type: Literal["delivery.status_changed"] = "delivery.status_changed"
    event_id: str
    delivery_id: int
    campaign_id: uuid.UUID
    sponsor_id: str
    status: DeliveryStatus
    previous_status: DeliveryStatus
    occurred_at: datetime
