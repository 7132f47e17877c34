"""A campaign's batches and test sends through the delivery core.

A batch message may arrive twice (a rebalance, a replay). Both copies load
the batch's ``pending`` rows; the provider's idempotency key (campaign, batch,
round and the exact set of rows) makes the second send a replay, and rows move
out of ``pending`` only once, so no recipient gets two copies and counters
count each row once.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import CampaignBatch, CampaignTestSend
from service import db, metrics, outbox
from service.campaigns import repository, sending_repository
from service.campaigns.lifecycle import CampaignStatus
from service.errors import (
    AccountError,
    PermanentProviderError,
    QuotaExceeded,
    RenderError,
    TransientProviderError,
)
from service.kafka import Producer
from service.logs import bind, bound
from service.settings import Settings
from service.templates import repository as templates_repository
from service.templates.compiled import single_line
from service.templates.urls import NO_DELIVERY
from service.templates.variables import SAMPLE_LEAD
from worker.delivery import core
from worker.delivery.accounts import Accounts
from worker.delivery.context import CampaignContext, CampaignContexts
from worker.delivery.guards import Guards
from worker.delivery.retry import RetryPolicy, wait_until_due
from worker.providers import templates_of
from worker.providers.accounts import ProviderClients
from worker.providers.base import EmailProvider, OutgoingEmail, SendResult
from worker.ratelimit import Pacer

log = logging.getLogger(__name__)

# The statuses whose batches go out: an A/B test share's too.
_SENDS = (CampaignStatus.SENDING, CampaignStatus.TESTING)


class CampaignBatches:
    """Sends a campaign's batches (``campaign-batches.v1``) and its test sends."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: EmailProvider,
        pacer: Pacer,
        producer: Producer,
        settings: Settings,
        clients: ProviderClients | None = None,
    ) -> None:
        self.sessions = sessions
        self.producer = producer
        self.accounts = Accounts(provider, pacer, settings, clients)
        self.core = self.accounts.default.core
        self.contexts = CampaignContexts(
            sessions, templates_of(provider), pacer, settings, accounts=self.accounts
        )
        self.guards = Guards(sessions, settings)
        self.retry = RetryPolicy(producer, settings)

    async def send_batch(self, event: CampaignBatch) -> None:
        """Send one batch's pending rows once, record the outcome, release the next batch."""
        with bound(campaign_id=str(event.campaign_id), batch=event.batch_no):
            await self._send_batch(event)

    async def _send_batch(self, event: CampaignBatch) -> None:
        await wait_until_due(event)
        context = await self.contexts.get(event.campaign_id)
        if context is None or context.status not in _SENDS:
            return  # paused or cancelled: resume/retry re-open the window
        bind(sponsor_id=context.sponsor_id)  # undone when send_batch's ``bound`` block ends
        if context.account_error is not None:
            # The sponsor's account cannot send (a secret missing here): pause, and read
            # the sponsor again on resume.
            await self.guards.pause(context, str(context.account_error))
            self.contexts.forget(event.campaign_id)
            return
        delivery = self._core(context)
        with metrics.SEND_STAGE.labels("load").time():
            async with db.driver(self.sessions) as driver:
                recipients = await sending_repository.load_pending_batch(
                    driver, event.campaign_id, event.batch_no
                )
        # Rows of the rest exist only once the winner is chosen; this context may
        # predate that by up to its status TTL, so it reads the winner again.
        undecided = context.variants and context.winner is None
        if undecided and any(recipient.variant is None for recipient in recipients):
            context = await self.contexts.fresh(event.campaign_id)
            if context is None or context.winner is None or context.status not in _SENDS:
                return
        with metrics.SEND_STAGE.labels("render").time():
            emails, failed = self._render(delivery, context, recipients)
        if not await self.guards.within_hourly_cap(context, len(emails)):
            return  # No release: the campaign idles until the reconciler re-opens its window.

        started = time.perf_counter()
        results: list[SendResult] = []
        if emails:
            key = idempotency_key(event, [email.delivery_id for email in emails])
            try:
                with metrics.SEND_STAGE.labels("send").time():
                    results = await delivery.send(emails, key)
            except QuotaExceeded as exc:
                await self.guards.pause(context, exc.code)
                return
            except AccountError as exc:
                # Every row would fail the same way: they stay pending for a resume.
                await self.guards.pause(context, f"{exc.code}: {exc.message}")
                return
            except PermanentProviderError as exc:
                failed.extend(core.all_failed(emails, exc))
            except TransientProviderError as exc:
                if await self.retry.retry_later(event, exc):
                    return
                failed.extend(core.all_failed(emails, exc))

        sent, refused = core.outcome(results)
        failed.extend(refused)
        await self._record(context, event, sent, failed, started)

    def _core(self, context: CampaignContext) -> core.DeliveryCore:
        return self.core if context.account is None else context.account.core

    def _render(
        self,
        delivery: core.DeliveryCore,
        context: CampaignContext,
        recipients: list[sending_repository.Recipient],
    ) -> tuple[list[OutgoingEmail], list[core.Failure]]:
        """Each recipient rendered with its A/B variant's message (one group per variant)."""
        if not context.variants:
            return delivery.render(context, recipients)
        groups: dict[int | None, list[sending_repository.Recipient]] = {}
        for recipient in recipients:
            groups.setdefault(recipient.variant, []).append(recipient)
        emails: list[OutgoingEmail] = []
        failed: list[core.Failure] = []
        for variant, group in groups.items():
            rendered, refused = delivery.render(context.for_variant(variant), group)
            emails.extend(rendered)
            failed.extend(refused)
        return emails, failed

    async def _record(
        self,
        context: CampaignContext,
        event: CampaignBatch,
        sent: list[tuple[int, str]],
        failed: list[core.Failure],
        started: float,
    ) -> None:
        # The next batch's message, released by the record, is published as the work ends.
        async with outbox.unit_of_work(self.sessions, self.producer) as work:
            with metrics.SEND_STAGE.labels("record").time():
                async with work.driver() as driver:
                    outcome = await sending_repository.record_batch_outcome(
                        driver, event.campaign_id, event.batch_no, sent, failed
                    )
            self._core(context).count(
                outcome.sent, failed[: outcome.failed], time.perf_counter() - started
            )
            if not outcome.released:
                # No batch with pending rows was released: the campaign may be done.
                await self._finish(event.campaign_id)
        if outcome.failed:
            await self.guards.pause_if_failing(context)

    async def _finish(self, campaign_id: uuid.UUID) -> None:
        async with self.sessions.begin() as session:
            if await repository.finish_if_done(session, campaign_id):
                log.info("campaign %s sent", campaign_id)
                self.contexts.forget(campaign_id)

    async def send_test(self, event: CampaignTestSend) -> None:
        """Render as the chosen lead (or a sample) and send ``[TEST] …`` to each address.

        The request id is the idempotency key: a redelivered event is a replay
        at the provider. A refused test is logged, not retried.
        """
        context = await self.contexts.get(event.campaign_id)
        if context is None:
            return
        if context.account_error is not None:
            # Never through the default account instead: the sponsor chose its own.
            log.warning("test send %s not sent: %s", event.request_id, context.account_error)
            self.contexts.forget(event.campaign_id)
            return
        fields = dict(SAMPLE_LEAD)
        if event.lead_id is not None:
            async with self.sessions() as session:
                fields = await templates_repository.lead_fields(
                    session, event.sponsor_id, event.lead_id
                )
        urls = self.core.urls.for_delivery(NO_DELIVERY, len(context.message.links))
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
                headers=context.headers(urls),
                sender_name=context.sender_name,
                sender_address=context.sender_address,
            )
            for address in event.emails
        ]
        try:
            await self._core(context).send(emails, f"test-{event.request_id}")
        except PermanentProviderError as exc:
            log.warning("test send %s refused: %s", event.request_id, exc)


def idempotency_key(event: CampaignBatch, delivery_ids: Sequence[int]) -> str:
    """Same batch, round and rows → same key; any other set of rows → another key."""
    digest = hashlib.sha256(",".join(map(str, delivery_ids)).encode()).hexdigest()[:16]
    return f"{event.campaign_id}-{event.batch_no}-{event.send_round}-{digest}"
