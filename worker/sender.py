"""The sender role: renders a batch, paces it, sends it, records the outcome.

A batch message may arrive twice (a rebalance, a replay). Both copies load
the batch's ``pending`` rows; the provider's idempotency key (campaign, batch,
round and the exact set of rows) makes the second send a replay, and rows move
out of ``pending`` only once, so no recipient gets two copies and counters
count each row once.

With Resend (``RESEND_TEMPLATES``), a round's body is stored at the provider
once, as a template, and each message carries only the recipient's variables
(``_decide_template``).
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
from datetime import UTC, datetime, timedelta
from email.utils import formataddr

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import (
    TOPIC_CAMPAIGN_BATCHES_DLQ,
    TOPIC_CAMPAIGN_BATCHES_RETRY,
    CampaignBatch,
    CampaignTestSend,
)
from service import db, metrics, outbox
from service.campaigns import repository
from service.campaigns.repository import Recipient
from service.errors import (
    PermanentProviderError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    RenderError,
    TransientProviderError,
)
from service.kafka import Producer
from service.logs import bind, bound
from service.models import Campaign, Sponsor
from service.settings import Settings
from service.stats import counters
from service.templates import logic as templates
from service.templates import repository as templates_repository
from service.templates.compiled import CompiledMessage, ProviderTemplate, single_line
from service.templates.urls import NO_DELIVERY, DeliveryUrls
from service.templates.variables import SAMPLE_LEAD
from worker.providers import templates_of
from worker.providers.base import EmailProvider, OutgoingEmail, SendResult, TemplateProvider
from worker.ratelimit import Pacer

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
    hourly_cap: int | None
    message: CompiledMessage
    list_id: str
    checked_at: float
    # The message as a provider template, and the id of the one this round sends
    # with; messages go out whole while ``template_id`` is None.
    template: ProviderTemplate | None = None
    template_id: str | None = None


class Sender:
    """Handles ``campaign-batches.v1`` and its retry topic (see the module docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: EmailProvider,
        pacer: Pacer,
        producer: Producer,
        settings: Settings,
    ) -> None:
        self.sessions = sessions
        self.provider = provider
        self.pacer = pacer
        self.producer = producer
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.send_max_in_flight)
        self._campaigns: dict[uuid.UUID, CampaignContext] = {}
        self._context_lock = asyncio.Lock()
        self.urls = templates.url_builder(settings)
        self._list_id_domain = templates.list_id_domain(settings)
        self._mailto = settings.unsubscribe_mailto
        self._as_json: bool = getattr(provider, "accepts_json_parts", False)
        self.templates = templates_of(provider)

    async def handle(self, events: Sequence[CampaignBatch]) -> None:
        await asyncio.gather(*(self._bounded(event) for event in events))

    async def _bounded(self, event: CampaignBatch) -> None:
        async with self._slots:
            await self.send_batch(event)

    async def _context(self, campaign_id: uuid.UUID) -> CampaignContext | None:
        cached = self._campaigns.get(campaign_id)
        if cached and time.monotonic() - cached.checked_at < STATUS_TTL_SECONDS:
            return cached
        # Batches arrive together: one of them compiles or refreshes, the others wait for it.
        async with self._context_lock:
            return await self._load_context(campaign_id)

    async def _load_context(self, campaign_id: uuid.UUID) -> CampaignContext | None:
        cached = self._campaigns.get(campaign_id)
        now = time.monotonic()
        if cached and now - cached.checked_at < STATUS_TTL_SECONDS:
            return cached
        if cached:
            async with self.sessions() as session:
                found = (
                    await session.execute(
                        select(Campaign.status, Campaign.provider_template_id).where(
                            Campaign.id == campaign_id
                        )
                    )
                ).first()
            if found is None:
                return None
            cached.status, cached.checked_at = found.status, now
            await self._decide_template(cached, found.provider_template_id)
            return cached
        async with self.sessions() as session:
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
            sender=formataddr(
                (single_line(sponsor.from_name or ""), single_line(sponsor.from_email))
            ),
            reply_to=single_line(sponsor.reply_to) if sponsor.reply_to else None,
            hourly_cap=sponsor.hourly_send_cap,
            message=templates.compile_campaign(sponsor, campaign),
            list_id=list_id(sponsor.name, sponsor.id, self._list_id_domain),
            checked_at=now,
        )
        if self.templates is not None:
            context.template = context.message.provider_template()
        await self._decide_template(context, campaign.provider_template_id)
        self._campaigns[campaign_id] = context
        return context

    async def _decide_template(self, context: CampaignContext, stored: str | None) -> None:
        """Set ``context.template_id`` from this round's decision, deciding it if nobody has.

        The first sender to see the round sending decides, under a lock: it
        creates the provider template (when the provider keeps templates,
        ``RESEND_TEMPLATES`` allows it and the message can be one) or records
        '' (whole bodies). A round keeps its decision, so a batch sent again by
        any sender sends the same request body under the same idempotency key.
        """
        templates = self.templates
        if stored is None and templates is not None and context.status == "sending":
            async with self.sessions.begin() as session:
                status, stored = await repository.lock_template_decision(
                    session, context.campaign_id
                )
                if stored is None and status == "sending":
                    stored = await self._create_template(context, templates)
                    await repository.set_template_decision(session, context.campaign_id, stored)
        context.template_id = stored if stored and context.template is not None else None

    async def _create_template(self, context: CampaignContext, templates: TemplateProvider) -> str:
        """The new template's id, or '' to send whole bodies (also when the provider fails)."""
        template = context.template
        if template is None or not self.settings.resend_templates:
            return ""
        try:
            for _ in range(2):  # creating and publishing: two requests at the provider's rate
                await self.pacer.acquire()
            return await templates.create_template(
                f"campaign {context.campaign_id}", template.html, template.text, template.keys
            )
        except ProviderError as exc:
            log.warning("campaign %s: sending whole bodies: %s", context.campaign_id, exc)
            return ""

    async def send_batch(self, event: CampaignBatch) -> None:
        """Send one batch's pending rows once, record the outcome, release the next batch."""
        with bound(campaign_id=str(event.campaign_id), batch=event.batch_no):
            await self._send_batch(event)

    async def _send_batch(self, event: CampaignBatch) -> None:
        if event.not_before is not None:
            await asyncio.sleep(max(0.0, (event.not_before - datetime.now(UTC)).total_seconds()))
        context = await self._context(event.campaign_id)
        if context is None or context.status != "sending":
            return  # paused or cancelled: resume/retry re-open the window
        bind(sponsor_id=context.sponsor_id)  # undone when send_batch's ``bound`` block ends
        with metrics.SEND_STAGE.labels("load").time():
            async with db.driver(self.sessions) as driver:
                recipients = await repository.load_pending_batch(
                    driver, event.campaign_id, event.batch_no
                )
        with metrics.SEND_STAGE.labels("render").time():
            emails, failed = self._render(context, event, recipients)
        if emails and context.hourly_cap is not None:
            async with self.sessions.begin() as session:
                allowed = await repository.reserve_hourly_sends(
                    session, context.sponsor_id, len(emails), context.hourly_cap
                )
            if not allowed:
                # No release: the campaign idles until the reconciler re-opens its window.
                log.info("sponsor %s reached its hourly cap", context.sponsor_id)
                return

        started = time.perf_counter()
        results: list[SendResult] = []
        if emails:
            key = idempotency_key(event, [email.delivery_id for email in emails])
            try:
                with metrics.SEND_STAGE.labels("send").time():
                    results = await self._send(emails, key)
            except QuotaExceeded as exc:
                await self._pause(context, exc.code)
                return
            except PermanentProviderError as exc:
                failed.extend((email.delivery_id, f"{exc.code}: {exc.message}") for email in emails)
            except TransientProviderError as exc:
                if await self._retry_later(event, exc):
                    return
                failed.extend((email.delivery_id, f"{exc.code}: {exc.message}") for email in emails)

        sent = [(r.delivery_id, r.provider_message_id) for r in results if r.provider_message_id]
        failed.extend((r.delivery_id, r.error) for r in results if r.error)
        with metrics.SEND_STAGE.labels("record").time():
            async with db.driver(self.sessions) as driver:
                outcome = await repository.record_batch_outcome(
                    driver, event.campaign_id, event.batch_no, sent, failed
                )
        self._count(outcome.sent, failed[: outcome.failed], time.perf_counter() - started)
        if outcome.released:
            # A batch with pending rows was released: the campaign cannot be done yet.
            await outbox.publish_rows(self.sessions, self.producer, outcome.released)
        else:
            await self._finish(event.campaign_id)
        if outcome.failed:
            await self._pause_if_failing(context)

    def _count(self, n_sent: int, failed: list[tuple[int, str]], seconds: float) -> None:
        """Metrics for rows that really changed state (a replayed batch counts nothing)."""
        provider = self.provider.name
        if n_sent:
            metrics.MESSAGES_SENT.labels(provider).inc(n_sent)
        for _, error in failed:
            reason = error.split(":", 1)[0].strip()[:40] or "unknown"
            metrics.MESSAGES_FAILED.labels(provider, reason).inc()
        metrics.BATCH_DURATION.observe(seconds)

    def _render(
        self, context: CampaignContext, event: CampaignBatch, recipients: list[Recipient]
    ) -> tuple[list[OutgoingEmail], list[tuple[int, str]]]:
        """Render every recipient; one that fails to render fails alone."""
        emails: list[OutgoingEmail] = []
        failed: list[tuple[int, str]] = []
        n_links = len(context.message.links)
        campaign_id = str(event.campaign_id)
        template, template_id = context.template, context.template_id
        for recipient in recipients:
            urls = self.urls.for_delivery(recipient.delivery_id, n_links)
            email = OutgoingEmail(
                delivery_id=recipient.delivery_id,
                campaign_id=campaign_id,
                sender=context.sender,
                to=recipient.email,
                subject="",
                reply_to=context.reply_to,
                headers=self.headers(context, urls),
            )
            try:
                if template is not None and template_id is not None:
                    email.subject, values = context.message.variables(
                        template, recipient.fields, urls
                    )
                    email.template_id = template_id
                    email.variables = dict(zip(template.keys, values, strict=True))
                else:
                    rendered = context.message.render(recipient.fields, urls, as_json=self._as_json)
                    email.subject = rendered.subject
                    email.html, email.text = rendered.html, rendered.text
                    email.html_json, email.text_json = rendered.html_json, rendered.text_json
            except RenderError as exc:
                failed.append((recipient.delivery_id, f"render_error: {exc}"))
                continue
            emails.append(email)
        return emails, failed

    def headers(self, context: CampaignContext, urls: DeliveryUrls) -> dict[str, str]:
        """RFC 8058 one-click unsubscribe (+ RFC 2369 mailto when configured) and List-Id."""
        unsubscribe = f"<{urls.unsubscribe}>"
        if self._mailto:
            token = urls.unsubscribe.rsplit("/", 1)[-1]
            unsubscribe += f", <mailto:{self._mailto}?subject=unsubscribe%20{token}>"
        return {
            "List-Unsubscribe": unsubscribe,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": context.list_id,
        }

    async def handle_tests(self, events: Sequence[CampaignTestSend]) -> None:
        """``campaign-tests.v1``: test sends, outside deliveries and counters."""
        for event in events:
            await self.send_test(event)

    async def send_test(self, event: CampaignTestSend) -> None:
        """Render as the chosen lead (or a sample) and send ``[TEST] …`` to each address.

        The request id is the idempotency key: a redelivered event is a replay
        at the provider. A refused test is logged, not retried.
        """
        context = await self._context(event.campaign_id)
        if context is None:
            return
        fields = dict(SAMPLE_LEAD)
        if event.lead_id is not None:
            async with self.sessions() as session:
                fields = await templates_repository.lead_fields(
                    session, event.sponsor_id, event.lead_id
                )
        urls = self.urls.for_delivery(NO_DELIVERY, len(context.message.links))
        try:
            rendered = context.message.render(fields, urls)
        except RenderError as exc:
            log.warning("test send %s not rendered: %s", event.request_id, exc)
            return
        emails = [
            OutgoingEmail(
                delivery_id=NO_DELIVERY,
                campaign_id=str(event.campaign_id),
                sender=context.sender,
                to=address,
                subject=single_line(f"[TEST] {rendered.subject}"),
                html=rendered.html,
                text=rendered.text,
                reply_to=context.reply_to,
                headers=self.headers(context, urls),
            )
            for address in event.emails
        ]
        try:
            await self._send(emails, f"test-{event.request_id}")
        except PermanentProviderError as exc:
            log.warning("test send %s refused: %s", event.request_id, exc)

    async def _send(self, emails: list[OutgoingEmail], key: str) -> list[SendResult]:
        """Send with the same key until it goes through; transient errors back off."""
        delay = 0.5
        for attempt in range(1, self.settings.send_max_tries + 1):
            await self.pacer.acquire()
            try:
                results = await self.provider.send_batch(emails, key)
            except RateLimited as exc:
                self.pacer.throttled(exc.retry_after)
                if attempt == self.settings.send_max_tries:
                    raise
            except TransientProviderError as exc:
                if attempt == self.settings.send_max_tries:
                    raise
                log.warning("provider error (try %d): %s", attempt, exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)
            else:
                self.pacer.succeeded()
                return results
        raise AssertionError("unreachable")

    async def _retry_later(self, event: CampaignBatch, error: TransientProviderError) -> bool:
        """Park the batch on the retry topic; False once its retries are used up (→ DLQ)."""
        reason = f"{error.code}: {error.message}"
        if event.attempt < self.settings.send_retry_topic_attempts:
            delay = min(self.settings.send_retry_base_seconds * 2**event.attempt, 60.0)
            retry = event.model_copy(
                update={
                    "attempt": event.attempt + 1,
                    "not_before": datetime.now(UTC) + timedelta(seconds=delay),
                    "last_error": reason,
                }
            )
            await self.producer.send(
                [(TOPIC_CAMPAIGN_BATCHES_RETRY, _key(event), retry.to_bytes())]
            )
            log.warning(
                "batch %s/%d parked for %.0fs: %s", event.campaign_id, event.batch_no, delay, reason
            )
            return True
        dead = event.model_copy(update={"last_error": reason})
        await self.producer.send([(TOPIC_CAMPAIGN_BATCHES_DLQ, _key(event), dead.to_bytes())])
        log.error("batch %s/%d dead-lettered: %s", event.campaign_id, event.batch_no, reason)
        return False

    async def _pause(self, context: CampaignContext, reason: str) -> None:
        async with self.sessions.begin() as session:
            await repository.set_status(session, context.campaign_id, "paused", reason)
        context.status = "paused"
        log.warning("campaign %s paused: %s", context.campaign_id, reason)

    async def _pause_if_failing(self, context: CampaignContext) -> None:
        """Auto-pause a campaign whose failure ratio passes ``SEND_FAILURE_PAUSE_RATIO``."""
        ratio = self.settings.send_failure_pause_ratio
        if ratio <= 0:
            return
        async with self.sessions() as session:
            counts = await counters.sums(session, context.campaign_id)
        attempted = counts["sent"] + counts["failed"]
        if (
            attempted >= self.settings.send_failure_pause_min
            and counts["failed"] >= ratio * attempted
        ):
            await self._pause(context, f"failure_rate: {counts['failed']} of {attempted} failed")

    async def _finish(self, campaign_id: uuid.UUID) -> None:
        async with self.sessions.begin() as session:
            if await repository.finish_if_done(session, campaign_id):
                log.info("campaign %s sent", campaign_id)
                self._campaigns.pop(campaign_id, None)


def list_id(name: str, sponsor_id: str, domain: str) -> str:
    """RFC 2919 ``List-Id``: the sponsor's name as a phrase (ASCII only) and a stable id."""
    phrase = "".join(
        c for c in single_line(name) if c.isascii() and c.isprintable() and c not in '"\\'
    )
    identifier = f"<{sponsor_id}.{domain}>"
    return f'"{phrase}" {identifier}' if phrase else identifier


def _key(event: CampaignBatch) -> str:
    return f"{event.campaign_id}:{event.batch_no}"


def idempotency_key(event: CampaignBatch, delivery_ids: Sequence[int]) -> str:
    """Same batch, round and rows → same key; any other set of rows → another key."""
    digest = hashlib.sha256(",".join(map(str, delivery_ids)).encode()).hexdigest()[:16]
    return f"{event.campaign_id}-{event.batch_no}-{event.send_round}-{digest}"
