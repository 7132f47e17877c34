"""Kafka event contracts for the campaign pipeline (``campaigns.v1``, ``campaign-batches.v1``).

Every event carries a ``type`` discriminator; a change that breaks old readers
gets a new topic version. Events carry ids, never objects: consumers read the
current state from PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

TOPIC_CAMPAIGNS = "campaigns.v1"
TOPIC_CAMPAIGN_BATCHES = "campaign-batches.v1"
TOPIC_CAMPAIGN_BATCHES_RETRY = "campaign-batches-retry.v1"
TOPIC_CAMPAIGN_BATCHES_DLQ = "campaign-batches-dlq.v1"
TOPIC_TRACKING_EVENTS = "tracking-events.v1"
TOPIC_PROVIDER_EVENTS = "provider-events.v1"
TOPIC_DELIVERY_EVENTS = "delivery-events.v1"
TOPIC_LEADS = "leads.v1"
TOPIC_CAMPAIGN_TESTS = "campaign-tests.v1"
# Messages a consumer could not decode or handle for good, with the reason in their
# headers (see ``worker/dead_letters.py``); ``campaign-batches-dlq.v1`` stays the
# sender's own, for batches the provider kept refusing.
TOPIC_DEAD_LETTERS = "dead-letters.v1"
# One-to-one messages to send (``schemas.messages.MessageRequested``).
TOPIC_MESSAGES = "messages.v1"
# Generic upstream domain events trigger rules read (``schemas.triggers.DomainEvent``).
TOPIC_CONVERSATIONS = "conversations.v1"
TOPIC_ORDERS = "orders.v1"
# What happened to appointments upstream (``schemas.appointments``), keyed by appointment id.
TOPIC_APPOINTMENTS = "appointments.v1"
# What a lead asks of an appointment from the email's links (``schemas.appointment_requests``),
# for the booking system, keyed by appointment id.
TOPIC_APPOINTMENT_REQUESTS = "appointment-requests.v1"

ALL_TOPICS = (
    TOPIC_CAMPAIGNS,
    TOPIC_CAMPAIGN_BATCHES,
    TOPIC_CAMPAIGN_BATCHES_RETRY,
    TOPIC_CAMPAIGN_BATCHES_DLQ,
    TOPIC_TRACKING_EVENTS,
    TOPIC_PROVIDER_EVENTS,
    TOPIC_DELIVERY_EVENTS,
    TOPIC_LEADS,
    TOPIC_CAMPAIGN_TESTS,
    TOPIC_DEAD_LETTERS,
    TOPIC_MESSAGES,
    TOPIC_CONVERSATIONS,
    TOPIC_ORDERS,
    TOPIC_APPOINTMENTS,
    TOPIC_APPOINTMENT_REQUESTS,
)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class CampaignQueued(_Event):
    """A campaign is ready to be planned (``campaigns.v1``, key: campaign id)."""

    type: Literal["campaign.queued"] = "campaign.queued"
    campaign_id: uuid.UUID
    sponsor_id: str


class CampaignBatch(_Event):
    """One batch of a campaign's recipients to send (``campaign-batches.v1``).

    Keyed ``{campaign_id}:{batch_no}`` so a campaign's batches spread over every
    partition. ``send_round`` changes when failed recipients are re-driven, so
    the provider's idempotency keys of the new round are new.
    """

    type: Literal["campaign.batch"] = "campaign.batch"
    campaign_id: uuid.UUID
    batch_no: int = Field(ge=0)
    send_round: int = Field(default=0, ge=0)
    attempt: int = Field(default=0, ge=0)
    # Set on the retry topic: do not send before this time.
    not_before: datetime | None = None
    # Set on the retry and dead-letter topics: why the last attempt failed.
    last_error: str | None = None


class CampaignTestSend(_Event):
    """Send a campaign's message to a few addresses, marked ``[TEST]`` (``campaign-tests.v1``).

    No delivery rows, no counters: the message carries tokens for no delivery.
    ``request_id`` is the provider's idempotency key, so a replay sends nothing new.
    """

    type: Literal["campaign.test"] = "campaign.test"
    request_id: uuid.UUID
    campaign_id: uuid.UUID
    sponsor_id: str
    emails: list[str]
    lead_id: int | None = None
