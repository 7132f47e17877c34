"""The sender role: renders a batch, paces it, sends it, records the outcome.

A batch message may arrive twice (a rebalance, a replay). Both copies load
the batch's ``pending`` rows; the provider's idempotency key (campaign, batch,
round and the exact set of rows) makes the second send a replay, and rows move
out of ``pending`` only once, so no recipient gets two copies and counters
count each row once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formataddr

import confluent_kafka
from aiolimiter import AsyncLimiter
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import CampaignBatch
from service.campaigns import repository
from service.errors import (
    PermanentProviderError,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from service.models import Campaign, Sponsor
from service.templates.render import CompiledMessage, RenderError, compile_message
from worker.providers.base import EmailProvider, OutgoingEmail, SendResult

log = logging.getLogger(__name__)

# How long a campaign's status is trusted before it is read again (pause/cancel latency).
STATUS_TTL_SECONDS = 1.0


@dataclass
class CampaignContext:
    """What the sender needs of a campaign, compiled once and cached."""

    campaign_id: uuid.UUID
    sponsor_id: str
    status: str
    sender: str
    reply_to: str | None
    message: CompiledMessage
    checked_at: float


class Sender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: EmailProvider,
        limiter: AsyncLimiter,
        *,
        max_in_flight: int = 8,
        max_tries: int = 5,
    ) -> None:
        self.sessions = sessions
        self.provider = provider
        self.limiter = limiter
        self.max_tries = max_tries
        self._slots = asyncio.Semaphore(max_in_flight)
        self._campaigns: dict[uuid.UUID, CampaignContext] = {}

    async def handle(self, messages: Sequence[confluent_kafka.Message]) -> None:
        events = []
        for message in messages:
            try:
                events.append(CampaignBatch.model_validate_json(message.value() or b""))
            except ValidationError as exc:
                log.error("sender: dropping an unreadable message: %s", exc)
        await asyncio.gather(*(self._bounded(event) for event in events))

    async def _bounded(self, event: CampaignBatch) -> None:
        async with self._slots:
            await self.send_batch(event)

    async def _context(self, campaign_id: uuid.UUID) -> CampaignContext | None:
        cached = self._campaigns.get(campaign_id)
        now = time.monotonic()
        if cached and now - cached.checked_at < STATUS_TTL_SECONDS:
            return cached
        async with self.sessions() as session:
            if cached:
                status = await session.scalar(
                    select(Campaign.status).where(Campaign.id == campaign_id)
                )
                if status is None:
                    return None
                cached.status, cached.checked_at = status, now
                return cached
            row = (
                await session.execute(
                    select(Campaign, Sponsor)
                    .join(Sponsor, Sponsor.id == Campaign.sponsor_id)
                    .where(Campaign.id == campaign_id)
                )
            ).first()
        if row is None:
            return None
        campaign, sponsor = row
        context = CampaignContext(
            campaign_id=campaign.id,
            sponsor_id=sponsor.id,
            status=campaign.status,
            sender=formataddr((sponsor.from_name or "", sponsor.from_email)),
            reply_to=sponsor.reply_to,
            message=compile_message(
                campaign.subject, campaign.message_body or "", campaign.html_body
            ),
            checked_at=now,
        )
        self._campaigns[campaign_id] = context
        return context

    async def send_batch(self, event: CampaignBatch) -> None:
        context = await self._context(event.campaign_id)
        if context is None or context.status != "sending":
            return
        async with self.sessions() as session:
            recipients = await repository.load_pending_batch(
                session, event.campaign_id, event.batch_no
            )
        if not recipients:
            await self._finish(event.campaign_id)
            return

        emails: list[OutgoingEmail] = []
        failed: list[tuple[int, str]] = []
        for recipient in recipients:
            try:
                rendered = context.message.render(recipient.fields)
            except RenderError as exc:
                failed.append((recipient.delivery_id, f"render_error: {exc}"))
                continue
            emails.append(
                OutgoingEmail(
                    delivery_id=recipient.delivery_id,
                    campaign_id=str(event.campaign_id),
                    sender=context.sender,
                    to=recipient.email,
                    subject=rendered.subject,
                    html=rendered.html,
                    text=rendered.text,
                    reply_to=context.reply_to,
                )
            )

        results: list[SendResult] = []
        if emails:
            key = idempotency_key(event, [email.delivery_id for email in emails])
            try:
                results = await self._send(emails, key)
            except QuotaExceeded as exc:
                async with self.sessions.begin() as session:
                    await repository.set_status(session, event.campaign_id, "paused", exc.code)
                context.status = "paused"
                log.warning("campaign %s paused: %s", event.campaign_id, exc.code)
                return
            except PermanentProviderError as exc:
                failed.extend((email.delivery_id, f"{exc.code}: {exc.message}") for email in emails)

        sent = [(r.delivery_id, r.provider_message_id) for r in results if r.provider_message_id]
        failed.extend((r.delivery_id, r.error) for r in results if r.error)
        async with self.sessions.begin() as session:
            await repository.record_batch_outcome(
                session, event.campaign_id, event.batch_no, sent, failed
            )
        await self._finish(event.campaign_id)

    async def _send(self, emails: list[OutgoingEmail], key: str) -> list[SendResult]:
        """Send with the same key until it goes through; transient errors back off."""
        delay = 0.5
        for attempt in range(1, self.max_tries + 1):
            await self.limiter.acquire()
            try:
                return await self.provider.send_batch(emails, key)
            except RateLimited as exc:
                if attempt == self.max_tries:
                    raise
                await asyncio.sleep(exc.retry_after if exc.retry_after else delay)
            except TransientProviderError as exc:
                if attempt == self.max_tries:
                    raise
                log.warning("provider error (try %d): %s", attempt, exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def _finish(self, campaign_id: uuid.UUID) -> None:
        async with self.sessions.begin() as session:
            if await repository.finish_if_done(session, campaign_id):
                log.info("campaign %s sent", campaign_id)
                self._campaigns.pop(campaign_id, None)


def idempotency_key(event: CampaignBatch, delivery_ids: Sequence[int]) -> str:
    """Same batch, round and rows → same key; any other set of rows → another key."""
    digest = hashlib.sha256(",".join(map(str, delivery_ids)).encode()).hexdigest()[:16]
    return f"{event.campaign_id}-{event.batch_no}-{event.send_round}-{digest}"
