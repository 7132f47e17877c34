"""The retry and dead-letter policy of a campaign batch.

Inside one handling, ``core.DeliveryCore.send`` retries the same request
(same idempotency key) with a jittered back-off. When the provider stays
down past ``SEND_MAX_TRIES``, the batch is parked on the retry topic with a
not-before time that doubles with each attempt, so the sender's slot is free
meanwhile; once ``SEND_RETRY_TOPIC_ATTEMPTS`` are used up, it goes to the
batch dead-letter topic and its rows fail.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from schemas.events import TOPIC_CAMPAIGN_BATCHES_DLQ, TOPIC_CAMPAIGN_BATCHES_RETRY, CampaignBatch
from service.errors import TransientProviderError
from service.kafka import Producer
from service.settings import Settings

log = logging.getLogger(__name__)

# The longest a parked batch waits before its next attempt.
MAX_PARK_SECONDS = 60.0


class RetryPolicy:
    """Parks a batch the provider could not take for later, then dead-letters it."""

    def __init__(self, producer: Producer, settings: Settings) -> None:
        self.producer = producer
        self.settings = settings

    def park_seconds(self, attempt: int) -> float:
        """The wait before retry ``attempt + 1``: doubling from ``SEND_RETRY_BASE_SECONDS``."""
        return min(self.settings.send_retry_base_seconds * 2.0**attempt, MAX_PARK_SECONDS)

    async def retry_later(self, event: CampaignBatch, error: TransientProviderError) -> bool:
        """Park the batch on the retry topic; False once its retries are used up (→ DLQ)."""
        reason = f"{error.code}: {error.message}"
        if event.attempt < self.settings.send_retry_topic_attempts:
            delay = self.park_seconds(event.attempt)
            retry = event.model_copy(
                update={
                    "attempt": event.attempt + 1,
                    "not_before": datetime.now(UTC) + timedelta(seconds=delay),
                    "last_error": reason,
                }
            )
            await self.producer.send(
                [(TOPIC_CAMPAIGN_BATCHES_RETRY, batch_key(event), retry.to_bytes())]
            )
            log.warning(
                "batch %s/%d parked for %.0fs: %s", event.campaign_id, event.batch_no, delay, reason
            )
            return True
        dead = event.model_copy(update={"last_error": reason})
        await self.producer.send([(TOPIC_CAMPAIGN_BATCHES_DLQ, batch_key(event), dead.to_bytes())])
        log.error("batch %s/%d dead-lettered: %s", event.campaign_id, event.batch_no, reason)
        return False


async def wait_until_due(event: CampaignBatch) -> None:
    """Sleep until a parked batch's not-before time (at once for a first attempt)."""
    if event.not_before is not None:
        await asyncio.sleep(max(0.0, (event.not_before - datetime.now(UTC)).total_seconds()))


def batch_key(event: CampaignBatch) -> str:
    """The Kafka key of a batch message: its campaign and number."""
    return f"{event.campaign_id}:{event.batch_no}"
