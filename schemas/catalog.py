"""Every Kafka topic's contract, as JSON Schema: what ``campaignctl export-schemas`` writes."""

from __future__ import annotations

from typing import Any

from schemas.appointment_requests import appointment_requests
from schemas.appointments import appointment_events
from schemas.events import (
    TOPIC_APPOINTMENT_REQUESTS,
    TOPIC_APPOINTMENTS,
    TOPIC_CAMPAIGN_BATCHES,
    TOPIC_CAMPAIGN_TESTS,
    TOPIC_CAMPAIGNS,
    TOPIC_CONVERSATIONS,
    TOPIC_DELIVERY_EVENTS,
    TOPIC_MESSAGES,
    TOPIC_ORDERS,
    TOPIC_PROVIDER_EVENTS,
    TOPIC_TRACKING_EVENTS,
    CampaignBatch,
    CampaignQueued,
    CampaignTestSend,
)
from schemas.leads import TOPIC_LEADS, lead_events
from schemas.messages import MessageRequested
from schemas.tracking import DeliveryStatusChanged, ProviderEvent, TrackingEvent
from schemas.triggers import DomainEvent


def contracts() -> dict[str, dict[str, Any]]:
    """Topic (without prefix) → the JSON Schema of the events it carries."""
    return {
        TOPIC_LEADS: lead_events.json_schema(),
        TOPIC_CAMPAIGNS: CampaignQueued.model_json_schema(),
        TOPIC_CAMPAIGN_BATCHES: CampaignBatch.model_json_schema(),
        TOPIC_CAMPAIGN_TESTS: CampaignTestSend.model_json_schema(),
        TOPIC_MESSAGES: MessageRequested.model_json_schema(),
        TOPIC_APPOINTMENTS: appointment_events.json_schema(),
        TOPIC_APPOINTMENT_REQUESTS: appointment_requests.json_schema(),
        TOPIC_TRACKING_EVENTS: TrackingEvent.model_json_schema(),
        TOPIC_PROVIDER_EVENTS: ProviderEvent.model_json_schema(),
        TOPIC_DELIVERY_EVENTS: DeliveryStatusChanged.model_json_schema(),
        TOPIC_CONVERSATIONS: DomainEvent.model_json_schema(),
        TOPIC_ORDERS: DomainEvent.model_json_schema(),
    }
