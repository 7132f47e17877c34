"""The table of consumer roles: what each reads, as which group, handled by whom.

Each ``Role`` declares its consumer group, the topics it reads with the event
type each carries (a decoder: bytes → event, raising ``ValueError`` for a
message that is not one), the handler that takes decoded events, and how much
it takes at once. ``worker/runner.py`` runs them; ``docs/topics.md`` lists them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import confluent_kafka
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.appointments import appointment_events
from schemas.events import (
    TOPIC_APPOINTMENTS,
    TOPIC_CAMPAIGN_BATCHES,
    TOPIC_CAMPAIGN_BATCHES_RETRY,
    TOPIC_CAMPAIGN_TESTS,
    TOPIC_CAMPAIGNS,
    TOPIC_LEADS,
    TOPIC_MESSAGES,
    TOPIC_PROVIDER_EVENTS,
    TOPIC_TRACKING_EVENTS,
    CampaignBatch,
    CampaignQueued,
    CampaignTestSend,
)
from schemas.leads import lead_events
from schemas.messages import MessageRequested
from schemas.tracking import ProviderEvent, TrackingEvent
from schemas.triggers import TRIGGER_TOPICS
from service.appointments.outgoing import Config as AppointmentConfig
from service.kafka import Producer
from service.settings import Settings
from worker.appointments import Appointments
from worker.ingester import Ingester
from worker.lanes import CAMPAIGNS, Lane
from worker.lead_sync import LeadSync
from worker.messenger import MessageSender
from worker.planner import Planner
from worker.providers.accounts import ProviderClients
from worker.providers.base import EmailProvider
from worker.ratelimit import Pacer
from worker.sender import Sender
from worker.trigger import Triggers, domain_decoder, lead_decoder

log = logging.getLogger(__name__)

# The fast lane's consumers (trigger → message-sender) fetch at least this often.
FAST_FETCH_MS = 50
# Messages one message-sender poll takes at most (up to PROVIDER_BATCH_SIZE a request).
MESSAGES_PER_POLL = 500

E = TypeVar("E")
Decoder = Callable[[bytes], E]
# Called from the consume thread with the consumer and its new assignment.
OnAssign = Callable[[confluent_kafka.Consumer, list[confluent_kafka.TopicPartition]], None]


@dataclass(frozen=True, slots=True)
class Role(Generic[E]):
    """One consumer group and what it reads.

    ``concurrency`` None: polled batches of up to ``batch_size`` go to ``handle``
    together; ``fill`` waits up to ``poll_seconds`` for a whole batch, otherwise
    a poll returns as soon as one message is there, with those already fetched.
    A number: each message is handled on its own, that many at once.
    """

    group: str
    reads: Mapping[str, Decoder[E]]  # topic (without prefix) → its event type's decoder
    handle: Callable[[Sequence[E]], Awaitable[None]]
    batch_size: int = 100
    concurrency: int | None = None
    poll_seconds: float = 0.5
    fill: bool = True
    # How long the broker may hold a fetch with nothing new (librdkafka: 500 ms);
    # shorter where an event's latency matters more than idle fetches.
    fetch_wait_ms: int | None = None
    on_assign: OnAssign | None = None


def consumer_roles(
    names: Sequence[str],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    producer: Producer,
    provider: EmailProvider,
    clients: ProviderClients | None = None,
) -> list[Role[Any]]:
    """The consumer roles behind the ``--role`` names given (the relay consumes nothing).

    ``clients``: sponsors' own provider accounts, shared by the sending roles.
    """
    roles: list[Role[Any]] = []
    if "planner" in names:
        batch_size, window = settings.provider_batch_size, settings.send_window_batches
        planner = Planner(sessions, producer, batch_size, window)
        roles.append(
            Role(
                "planner", {TOPIC_CAMPAIGNS: CampaignQueued.model_validate_json}, planner.handle, 10
            )
        )
    if "sender" in names:
        roles += _sender_roles(settings, sessions, producer, provider, clients)
    if "ingester" in names:
        ingester = Ingester(sessions, producer, settings)
        reads: dict[str, Decoder[TrackingEvent | ProviderEvent]] = {
            TOPIC_TRACKING_EVENTS: TrackingEvent.model_validate_json,
            TOPIC_PROVIDER_EVENTS: ProviderEvent.model_validate_json,
        }
        roles.append(
            Role("ingester", reads, ingester.handle, settings.ingest_batch_size, poll_seconds=0.2)
        )
    if "lead-sync" in names:
        lead_sync = LeadSync(sessions)
        roles.append(
            Role(
                "lead-sync",
                {TOPIC_LEADS: lead_events.validate_json},
                lead_sync.handle,
                settings.lead_sync_batch,
            )
        )
    if "message-sender" in names:
        messenger = MessageSender(sessions, provider, settings, clients)
        roles.append(
            Role(
                "message-sender",
                {TOPIC_MESSAGES: MessageRequested.model_validate_json},
                messenger.handle,
                # Several provider batches a poll, sent side by side: a backlog is not
                # one request after another, each with its own statements.
                batch_size=MESSAGES_PER_POLL,
                # Whatever is there, at once: a lone message does not wait for a batch.
                fill=False,
                fetch_wait_ms=FAST_FETCH_MS,
                on_assign=_share_rate(settings, messenger.pacer, TOPIC_MESSAGES),
            )
        )
    if "trigger" in names:
        triggers = Triggers(sessions, producer, settings)
        decoders = {
            topic: lead_decoder(topic) if topic == TOPIC_LEADS else domain_decoder(topic)
            for topic in TRIGGER_TOPICS
        }
        # fill=False: an event that would fire a message does not wait for a batch.
        roles.append(
            Role(
                "trigger",
                decoders,
                triggers.handle,
                poll_seconds=0.2,
                fill=False,
                fetch_wait_ms=FAST_FETCH_MS,
            )
        )
    if "appointments" in names:
        handler = Appointments(sessions, producer, AppointmentConfig.from_settings(settings))
        roles.append(
            Role(
                "appointments",
                {TOPIC_APPOINTMENTS: appointment_events.validate_json},
                handler.handle,
                batch_size=50,
            )
        )
    return roles


def _sender_roles(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    producer: Producer,
    provider: EmailProvider,
    clients: ProviderClients | None,
) -> list[Role[Any]]:
    """First sends, retries and test sends: one sender and one pacer behind all three."""
    pacer = Pacer(settings.provider_rate_per_second, CAMPAIGNS)
    Lane.attach(sessions, pacer, CAMPAIGNS, settings.messages_rate_share)
    sender = Sender(sessions, provider, pacer, producer, settings, clients)
    batches = CampaignBatch.model_validate_json
    in_flight = settings.send_max_in_flight
    return [
        Role(
            "sender",
            {TOPIC_CAMPAIGN_BATCHES: batches},
            sender.handle,
            concurrency=in_flight,
            on_assign=_share_rate(settings, pacer, TOPIC_CAMPAIGN_BATCHES),
        ),
        Role(
            "sender-retry",
            {TOPIC_CAMPAIGN_BATCHES_RETRY: batches},
            sender.handle,
            concurrency=in_flight,
        ),
        Role(
            "sender-test",
            {TOPIC_CAMPAIGN_TESTS: CampaignTestSend.model_validate_json},
            sender.handle_tests,
            batch_size=10,
        ),
    ]


def _share_rate(settings: Settings, pacer: Pacer, topic_name: str) -> OnAssign:
    """On every rebalance, pace at the global rate × our share of the topic's partitions."""
    loop = asyncio.get_running_loop()
    topic = settings.topic(topic_name)
    fallback = (
        settings.kafka_batch_partitions
        if topic_name == TOPIC_CAMPAIGN_BATCHES
        else settings.kafka_partitions
    )

    def on_assign(
        consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        try:
            total = len(consumer.list_topics(topic, timeout=5).topics[topic].partitions)
        except Exception:
            total = fallback
        loop.call_soon_threadsafe(pacer.set_share, len(partitions), total)
        log.info("%s: %d of %d partitions", topic_name, len(partitions), total)

    return on_assign
