"""Transactional messages through the delivery core: load, check, render, send, record.

A ``messages.v1`` event names one message row; a polled batch of them is
loaded, sent and recorded together. A row no longer ``queued`` is skipped,
and the provider's idempotency key is the message id, so a message delivered
twice (a replay, a rebalance, two copies at once) goes out once.
A transient failure past ``SEND_MAX_TRIES`` leaves the message ``queued`` on
a ``message.retry`` timer (``service.messages.retries``) until its attempts
are spent; an exhausted quota stops this process asking the provider for
``MESSAGE_QUOTA_RETRY_SECONDS``, every message meanwhile waiting on a timer.
A type's template is compiled once per type and process, and again when the
type changes (``updated_at``). Category rules: marketing and notification
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

import asyncio
import base64
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formataddr
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.messages import MessageRequested
from service import metrics
from service.campaigns.sending_repository import Recipient
from service.errors import AccountError, ProviderError, QuotaExceeded, TransientProviderError
from service.logs import bound
from service.messages import repository, retries
from service.messages.tracking import tracking_tag
from service.messages.types import content_of
from service.models import Message, MessageType, Sponsor, TemplateVersion
from service.preferences import logic as preferences
from service.preferences import tokens as preference_tokens
from service.settings import Settings
from service.templates import logic as template_logic
from service.templates.compiled import (
    CompiledMessage,
    ProviderTemplate,
    compile_message,
    single_line,
)
from service.templates.content import Content
from service.templates.urls import NO_DELIVERY, DeliveryUrls
from worker.delivery import core
from worker.delivery.accounts import Accounts
from worker.providers.accounts import ProviderClients
from worker.providers.base import Attachment, EmailProvider, OutgoingEmail
from worker.ratelimit import Pacer

log = logging.getLogger(__name__)

_INLINE_CACHE = 256

# Provider requests one message-sender has open at once (each still paced).
SENDS_AT_ONCE = 32
SUPPRESSED = "the address is suppressed"


@dataclass
class TypeContext:
    """A message type compiled for sending (``core.MessageContext``)."""

    tag: str
    sender: str
    reply_to: str | None
    message: CompiledMessage
    version: datetime
    category: str
    preference_category: str | None
    # The template version compiled, for a type that sends its template's latest.
    template_version: int | None = None
    # Messages go out whole: one message, nothing for a provider template to save.
    template: ProviderTemplate | None = field(default=None)
    template_id: str | None = field(default=None)
    # ``sender``'s parts as they are: a provider API may format ``from`` its own way.
    sender_name: str = ""
    sender_address: str = ""

    def headers(self, urls: DeliveryUrls) -> dict[str, str]:
        # A transactional message belongs to no list: no List-Unsubscribe. Any other
        # unsubscribes from its preference category only (RFC 8058 one-click).
        if self.preference_category is None or not urls.preferences:
            return {}
        return {
            "List-Unsubscribe": f"<{urls.unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }


@dataclass(frozen=True, slots=True)
class Wait:
    """A message left ``queued`` for a timer: retries spent when it fires, when, why."""

    event: MessageRequested
    attempt: int
    due_at: datetime
    reason: str


class MessageDeliveries:
    """Sends the messages of a polled batch through the shared core.

    One statement loads the batch (with each address's suppression), the sends
    run side by side (``SENDS_AT_ONCE``, paced), and one transaction records every
    outcome and sets the retry timers.
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
        self._types: dict[uuid.UUID, TypeContext] = {}
        # One-off templates by their content and the sponsor's details they show:
        # an application sending many of the same one compiles it once.
        self._inline: OrderedDict[tuple[object, ...], TypeContext] = OrderedDict()
        self._sending = asyncio.Semaphore(SENDS_AT_ONCE)
        self._public_base = settings.public_base_url.rstrip("/")
        # Until this monotonic time the provider's quota is spent (0: it is not).
        self._quota_until = 0.0
        self._quota_reason = ""

    async def send(self, event: MessageRequested) -> None:
        await self.send_many([event])

    async def send_many(self, events: Sequence[MessageRequested]) -> None:
        """Send each message still ``queued`` once; record what became of each."""
        by_id = {event.message_id: event for event in events}
        async with self.sessions() as session:
            found = await repository.messages_to_send(session, list(by_id))
            # Types that send their template's latest version: one query per template.
            latest = {
                template_id: await repository.latest_template(session, template_id)
                for template_id in {
                    f.message_type.template_id
                    for f in found
                    if f.message_type
                    and f.message_type.template_id
                    and not f.message_type.template_version
                }
            }
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(self._deliver(by_id[f.message.id], f, latest) for f in found)
        )
        outcomes = [a for a in answers if isinstance(a, repository.Outcome)]
        waits = [a for a in answers if isinstance(a, Wait)]
        async with self.sessions.begin() as session:
            moved = await repository.record_outcomes(session, outcomes)
            for wait in waits:
                await retries.retry_later(session, wait.event, wait.attempt, wait.due_at)
                await repository.note_retry(session, wait.event.message_id, wait.reason)
        if len(moved) < len(outcomes):
            log.info("%d messages already recorded by another copy", len(outcomes) - len(moved))
        self._count([o for o in outcomes if o.message_id in moved], started)

    async def _deliver(
        self,
        event: MessageRequested,
        found: repository.ToSend,
        latest: dict[uuid.UUID, TemplateVersion | None],
    ) -> repository.Outcome | Wait:
        message = found.message
        with bound(sponsor_id=message.sponsor_id, message_id=str(message.id)):
            checks = found.checks
            if checks.suppressed:
                return repository.Outcome(message.id, "suppressed", error=SUPPRESSED)
            message_type = found.message_type
            # A one-off template has no type, and follows no preference.
            category = message_type.preference_category if message_type else None
            if category is not None:
                decision = preferences.decide(checks.opted_out, checks.frequency)
                if decision == "suppress":
                    error = f"the recipient opted out of {category}"
                    return repository.Outcome(message.id, "suppressed", error=error)
                if decision == "hold":
                    error = f"{checks.frequency} {category}"
                    return repository.Outcome(message.id, "held", error=error)
            try:
                delivery = self.accounts.of(found.sponsor.provider).core
            except AccountError as exc:
                return repository.Outcome(message.id, "failed", error=str(exc))
            version = None
            if message_type is not None and message_type.template_id is not None:
                version = latest.get(message_type.template_id)
            context = self._context(message, message_type, found.sponsor, version)
            recipient = Recipient(NO_DELIVERY, message.to_email, _fields(message, checks))
            emails, failed = delivery.render(
                context, [recipient], lambda n_links: self._urls(message, category, n_links)
            )
            if failed:
                return repository.Outcome(message.id, "failed", error=failed[0][1])
            email = emails[0]
            # The provider echoes this tag in its webhooks: how they find the message.
            email.campaign_id = tracking_tag(message.id)
            email.reply_to = message.reply_to or context.reply_to
            # A suppressed copy is left out; the message still goes to its recipient.
            email.cc = tuple(a for a in message.cc if a not in found.blocked)
            email.bcc = tuple(a for a in message.bcc if a not in found.blocked)
            email.attachments = _attachments(message)
            async with self._sending:
                return await self._send_one(delivery, event, email, context.message.links)

    async def _send_one(
        self,
        delivery: core.DeliveryCore,
        event: MessageRequested,
        email: OutgoingEmail,
        links: Sequence[str],
    ) -> repository.Outcome | Wait:
        if time.monotonic() < self._quota_until:
            # The quota is spent: the provider would refuse it, so it is not asked.
            return self._wait_for_quota(event)
        try:
            results = await delivery.send([email], str(event.message_id))
        except QuotaExceeded as exc:
            return self._quota_exhausted(event, exc)
        except TransientProviderError as exc:
            # Retried with the same key until SEND_MAX_TRIES; next, on a timer.
            wait = self._retry_later(event, exc)
            if wait is not None:
                return wait
            failed = core.all_failed([email], exc)
        except ProviderError as exc:
            failed = core.all_failed([email], exc)
        else:
            self._quota_cleared()
            sent, failed = core.outcome(results)
            if sent:
                return repository.Outcome(event.message_id, "sent", sent[0][1], links=links)
        return repository.Outcome(
            event.message_id, "failed", error=failed[0][1] if failed else "no answer"
        )

    def _retry_later(self, event: MessageRequested, exc: ProviderError) -> Wait | None:
        """The message's next attempt on a timer; None once its retries are used up."""
        if event.attempt >= self.settings.message_retry_attempts:
            return None
        delay = retries.backoff_seconds(self.settings.message_retry_base_seconds, event.attempt)
        reason = f"{exc.code}: {exc.message}"
        log.warning("message retry %d in %.0fs: %s", event.attempt + 1, delay, reason)
        due = datetime.now(UTC) + timedelta(seconds=delay)
        return Wait(event, event.attempt + 1, due, reason)

    def _quota_exhausted(self, event: MessageRequested, exc: QuotaExceeded) -> Wait:
        """Stop asking the provider until the quota window has passed; raise the alert."""
        seconds = self.settings.message_quota_retry_seconds
        if time.monotonic() >= self._quota_until:
            log.error(
                "provider quota exhausted (%s: %s): messages stay queued, tried again in %.0fs",
                exc.code,
                exc.message,
                seconds,
            )
        metrics.PROVIDER_QUOTA_EXHAUSTED.labels(self.core.provider.name).set(1)
        self._quota_until = time.monotonic() + seconds
        self._quota_reason = f"{exc.code}: {exc.message}"
        return self._wait_for_quota(event)

    def _wait_for_quota(self, event: MessageRequested) -> Wait:
        """Keep the message queued, on a timer due when the quota window ends; not an
        attempt spent: a quota says nothing of this message."""
        left = max(self._quota_until - time.monotonic(), 0.0)
        due = datetime.now(UTC) + timedelta(seconds=left)
        return Wait(event, event.attempt, due, self._quota_reason)

    def _quota_cleared(self) -> None:
        if self._quota_until:
            self._quota_until = 0.0
            metrics.PROVIDER_QUOTA_EXHAUSTED.labels(self.core.provider.name).set(0)
            log.info("provider quota available again: messages are sent")

    def _count(self, recorded: Sequence[repository.Outcome], started: float) -> None:
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

    def _context(
        self,
        message: Message,
        message_type: MessageType | None,
        sponsor: Sponsor,
        latest: TemplateVersion | None = None,
    ) -> TypeContext:
        """The type compiled, from the cache while the type (and the latest version of
        its template, if it sends the latest) is unchanged; a one-off message's own
        template from a cache of its own."""
        if message_type is None:
            return self._inline_context(message.template or {}, sponsor)
        cached = self._types.get(message_type.id)
        version = latest.version if latest else None
        if (
            cached is not None
            and cached.version == message_type.updated_at
            and cached.template_version == version
        ):
            return cached
        content = content_of(message_type)
        if latest is not None:
            content = Content(
                latest.subject, latest.message_body, latest.html_body, latest.text_body
            )
        context = _compiled(
            sponsor,
            f"message:{message_type.key}",
            content,
            message_type.category,
            preference_category=message_type.preference_category,
            from_name=message_type.from_name,
            reply_to=message_type.reply_to,
            version=message_type.updated_at,
        )
        context.template_version = version
        self._types[message_type.id] = context
        return context

    def _inline_context(self, template: dict[str, Any], sponsor: Sponsor) -> TypeContext:
        key = (
            orjson.dumps(template, option=orjson.OPT_SORT_KEYS),
            sponsor.id,
            sponsor.name,
            sponsor.from_name,
            sponsor.from_email,
            sponsor.reply_to,
            sponsor.postal_address,
        )
        cached = self._inline.get(key)
        if cached is not None:
            self._inline.move_to_end(key)
            return cached
        content = Content(
            template["subject"],
            template.get("message_body"),
            template.get("html_body"),
            template.get("text_body"),
        )
        context = _compiled(sponsor, "message:inline", content, template["category"])
        self._inline[key] = context
        if len(self._inline) > _INLINE_CACHE:
            self._inline.popitem(last=False)
        return context


def _compiled(
    sponsor: Sponsor,
    tag: str,
    content: Content,
    category: str,
    *,
    preference_category: str | None = None,
    from_name: str | None = None,
    reply_to: str | None = None,
    version: datetime | None = None,
) -> TypeContext:
    """A message's template compiled, with the sender's name and reply-to (the
    type's, else the sponsor's)."""
    name = single_line(from_name or sponsor.from_name or "")
    address = single_line(sponsor.from_email)
    reply = reply_to or sponsor.reply_to
    return TypeContext(
        tag=tag,
        sender=formataddr((name, address)),
        sender_name=name,
        sender_address=address,
        reply_to=single_line(reply) if reply else None,
        message=compile_message(
            content,
            template_logic.brand_for(sponsor),
            preferences=preference_category is not None,
        ),
        version=version or datetime.min,
        category=category,
        preference_category=preference_category,
    )


def _fields(message: Message, checks: repository.SendChecks) -> dict[str, object]:
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
