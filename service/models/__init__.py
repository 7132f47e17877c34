"""SQLAlchemy models: the whole schema, PostgreSQL being the source of truth.

One module per domain; every model is re-exported here, so ``from service.models
import Campaign`` works, and importing the package registers every table on
``Base.metadata`` (what migrations compare against, and what string references
such as ``ForeignKey("sponsors.id")`` resolve through).

Per-recipient tables (``campaign_deliveries``, ``delivery_events``) are only
touched with set-based statements in ``repository`` modules; the ORM classes
describe them for migrations and the few single-row reads.
"""

from service.models.appointments import Appointment, Timer
from service.models.base import Base, table_of
from service.models.campaigns import (
    Campaign,
    CampaignDelivery,
    CampaignLink,
    CampaignStats,
    CampaignStatsHourly,
)
from service.models.digests import DigestEvent, DigestRun, DigestSubscription
from service.models.lanes import SendLane
from service.models.leads import Lead, LeadTally, LeadTombstone
from service.models.messages import Message, MessageEvent, MessageIdempotencyKey, MessageType
from service.models.outbox import OutboxMessage
from service.models.preferences import RecipientPreference
from service.models.retention import TablePartition
from service.models.sponsors import ApiRateCounter, Sponsor, SponsorHourlySends
from service.models.templates import Template, TemplateVersion
from service.models.tracking import DeliveryEvent, Suppression
from service.models.triggers import TriggerFiring, TriggerRule

__all__ = [
    "ApiRateCounter",
    "Appointment",
    "Base",
    "Campaign",
    "CampaignDelivery",
    "CampaignLink",
    "CampaignStats",
    "CampaignStatsHourly",
    "DeliveryEvent",
    "DigestEvent",
    "DigestRun",
    "DigestSubscription",
    "Lead",
    "LeadTally",
    "LeadTombstone",
    "Message",
    "MessageEvent",
    "MessageIdempotencyKey",
    "MessageType",
    "OutboxMessage",
    "RecipientPreference",
    "SendLane",
    "Sponsor",
    "SponsorHourlySends",
    "Suppression",
    "TablePartition",
    "Template",
    "TemplateVersion",
    "Timer",
    "TriggerFiring",
    "TriggerRule",
    "table_of",
]
