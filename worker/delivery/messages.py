"""Transactional messages through the delivery core: load, check, render, send, record.

A ``messages.v1`` event names one message row; a polled batch of them is
loaded, sent and recorded together. A row no longer ``queued`` is skipped,
and the provider's idempotency key is the key of the batch the message was
claimed into, or its own id when it goes alone (``message_sends``), so a
message delivered twice (a replay, a rebalance, two copies at once) goes out once.
A transient failure past ``SEND_MAX_TRIES`` leaves the message ``queued`` on
a ``message.retry`` timer (``service.messages.retries``) until its attempts
are spent; an exhausted quota stops this process asking the provider for
``MESSAGE_QUOTA_RETRY_SECONDS``, every message meanwhile waiting on a timer.
A type's template is compiled once per type and process, and again when the
type changes (``message_context``). Category rules: marketing and notification
messages skip every suppression of the sponsor; transactional ones only hard
bounces, complaints and the global list. Its pixel and links carry message
tokens, and the provider's tags name the message (``service.messages.tracking``).
A type with a preference category follows its recipient's preference for it:
opted out, the message is ``suppressed``; daily or weekly, it is ``held`` for a
digest (``service.preferences.repository.held_messages``). Such a message links
to the preference centre in its footer and carries a one-click
``List-Unsubscribe`` for its category only; a type without one (transactional)
carries neither.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.messages import MessageRequested
from service.campaigns.sending_repository import Recipient
from service.errors import AccountError
from service.logs import bound
from service.messages import retries, sending_repository
from service.messages.attachments import Attachment
from service.messages.tracking import tracking_tag
from service.models import Message, TemplateVersion
from service.preferences import logic as preferences
from service.preferences import tokens as preference_tokens
from service.settings import Settings
from service.templates.urls import NO_DELIVERY, DeliveryUrls
from worker.delivery.accounts import Accounts
from worker.delivery.message_context import MessageContexts
from worker.delivery.message_sends import MessageSends, Ready, Wait, plan
from worker.providers.accounts import ProviderClients
from worker.providers.base import EmailProvider
from worker.ratelimit import Pacer

log = logging.getLogger(__name__)

SUPPRESSED = "the address is suppressed"


class MessageDeliveries:
    """Sends the messages of a polled batch through the shared core.

    One statement loads the batch (with each address's suppression), one claims
    its provider batches (``message_sends``), the requests run side by side
    (``SENDS_AT_ONCE``, paced), and one transaction records every outcome and sets
    the retry timers.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: EmailProvider,
        pacer: Pacer,
        settings: Settings,
        clients: ProviderClients | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.accounts = Accounts(provider, pacer, settings, clients)
        self.core = self.accounts.default.core
        self.contexts = MessageContexts()
        self.sends = MessageSends(self.core, settings)
        self._public_base = settings.public_base_url.rstrip("/")
        self._batch_size = settings.provider_batch_size

    async def send(self, event: MessageRequested) -> None:
        await self.send_many([event])

    async def send_many(self, events: Sequence[MessageRequested]) -> None:
        """Send each message still ``queued`` once; record what became of each."""
        by_id = {event.message_id: event for event in events}
        async with self.sessions() as session:
            found = await sending_repository.messages_to_send(session, list(by_id))
            # Types that send their template's latest version: one query per template.
            latest = {
                template_id: await sending_repository.latest_template(session, template_id)
                for template_id in {
                    f.message_type.template_id
                    for f in found
                    if f.message_type
                    and f.message_type.template_id
                    and not f.message_type.template_version
                }
            }
        started = time.perf_counter()
        outcomes: list[sending_repository.Outcome] = []
        ready: list[Ready] = []
        for item in found:
            # A member of a claimed batch that was not polled goes with its batch.
            event = by_id.get(item.message.id) or MessageRequested(
                message_id=item.message.id, sponsor_id=item.message.sponsor_id
            )
            prepared = self._prepare(event, item, latest)
            if isinstance(prepared, Ready):
                ready.append(prepared)
            else:
                outcomes.append(prepared)
        planned = await plan(self.sessions, ready, self._batch_size)
        answers = await self.sends.send_plan(planned)
        outcomes += [a for a in answers if isinstance(a, sending_repository.Outcome)]
        waits = [a for a in answers if isinstance(a, Wait)]
        async with self.sessions.begin() as session:
            moved = await sending_repository.record_outcomes(session, outcomes)
            for wait in waits:
                await retries.retry_later(session, wait.event, wait.attempt, wait.due_at)
                await sending_repository.note_retry(session, wait.event.message_id, wait.reason)
        if len(moved) < len(outcomes):
            log.info("%d messages already recorded by another copy", len(outcomes) - len(moved))
        self._count([o for o in outcomes if o.message_id in moved], started)
        if planned.elsewhere:
            # Claimed by another copy between the load and the claim: sent again with
            # that batch, whose claim is now visible (so this does not come back here).
            await self.send_many(planned.elsewhere)

    def _prepare(
        self,
        event: MessageRequested,
        found: sending_repository.ToSend,
        latest: dict[uuid.UUID, TemplateVersion | None],
    ) -> sending_repository.Outcome | Ready:
        """The message rendered, or what became of it without a request."""
        message = found.message
        with bound(sponsor_id=message.sponsor_id, message_id=str(message.id)):
            checks = found.checks
            message_type = found.message_type
            # A one-off template has no type, and follows no preference.
            category = message_type.preference_category if message_type else None
            # A claimed message was checked before its claim: sent with its batch as
            # claimed, or the batch would differ from the request that may be out.
            if message.send_batch is None:
                decided = _decided(message.id, checks, category)
                if decided is not None:
                    return decided
            try:
                delivery = self.accounts.of(found.sponsor.provider).core
            except AccountError as exc:
                return sending_repository.Outcome(message.id, "failed", error=str(exc))
            version = None
            if message_type is not None and message_type.template_id is not None:
                version = latest.get(message_type.template_id)
            context = self.contexts.of(message, message_type, found.sponsor, version)
            recipient = Recipient(NO_DELIVERY, message.to_email, _fields(message, checks))
            emails, failed = delivery.render(
                context, [recipient], lambda n_links: self._urls(message, category, n_links)
            )
            if failed:
                return sending_repository.Outcome(message.id, "failed", error=failed[0][1])
            email = emails[0]
            # The provider echoes this tag in its webhooks: how they find the message.
            email.campaign_id = tracking_tag(message.id)
            email.reply_to = message.reply_to or context.reply_to
            # A suppressed copy is left out; the message still goes to its recipient.
            email.cc = tuple(a for a in message.cc if a not in found.blocked)
            email.bcc = tuple(a for a in message.bcc if a not in found.blocked)
            email.attachments = _attachments(message)
            return Ready(event, email, context.message.links, message.send_batch, delivery)

    def _count(self, recorded: Sequence[sending_repository.Outcome], started: float) -> None:
        """Metrics for the messages whose state this batch changed."""
        n_sent = sum(1 for o in recorded if o.status == "sent")
        failed = [(0, o.error or "") for o in recorded if o.status == "failed"]
        if n_sent or failed:
            self.core.count(n_sent, failed, time.perf_counter() - started)

    def _urls(self, message: Message, category: str | None, n_links: int) -> DeliveryUrls:
        """The message's own URLs; with a preference category, its unsubscribe and
        preference centre links, opened on that category."""
        urls = self.core.urls.for_message(message.id, n_links)
        if category is not None:
            token = preference_tokens.sign(
                self.core.urls.signer, message.sponsor_id, message.to_email, category
            )
            urls.preferences = f"{self._public_base}/preferences/{token}"
            urls.unsubscribe = urls.preferences + "/unsubscribe"
        return urls


def _decided(
    message_id: uuid.UUID, checks: sending_repository.SendChecks, category: str | None
) -> sending_repository.Outcome | None:
    """Suppressed or held without a request, by suppressions and preferences; None: send."""
    if checks.suppressed:
        return sending_repository.Outcome(message_id, "suppressed", error=SUPPRESSED)
    if category is not None:
        decision = preferences.decide(checks.opted_out, checks.frequency)
        if decision == "suppress":
            error = f"the recipient opted out of {category}"
            return sending_repository.Outcome(message_id, "suppressed", error=error)
        if decision == "hold":
            return sending_repository.Outcome(
                message_id, "held", error=f"{checks.frequency} {category}"
            )
    return None


def _fields(message: Message, checks: sending_repository.SendChecks) -> dict[str, object]:
    """The template's variables: the message's data is read as ``attributes.*``, the
    recipient's preference for the type's category as ``preferences.*``."""
    return {
        "email": message.to_email,
        "attributes": message.data,
        "preferences": {
            "opted_out": bool(checks.opted_out),
            "frequency": checks.frequency or "immediately",
            "format": checks.format or "detailed",
        },
    }


def _attachments(message: Message) -> tuple[Attachment, ...]:
    """The files as checked at the API, decoded again."""
    return tuple(
        Attachment(
            filename=item["filename"],
            content_type=item["content_type"],
            content=base64.b64decode(item["content"]),
            content_id=item.get("content_id"),
        )
        for item in message.attachments
    )
