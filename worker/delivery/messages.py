"""Transactional messages through the delivery core: load, check, render, send, record.

A ``messages.v1`` event names one message row. A row no longer ``queued`` is
skipped, and the provider's idempotency key is the message id, so a message
delivered twice (a replay, a rebalance, two copies at once) goes out once.
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

import base64
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formataddr

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.messages import MessageRequested
from service import metrics
from service.campaigns.sending_repository import Recipient
from service.errors import ProviderError, QuotaExceeded, TransientProviderError
from service.logs import bound
from service.messages import repository, retries
from service.messages.tracking import tracking_tag
from service.messages.types import content_of
from service.models import Message, MessageType, Sponsor
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
from service.templates.urls import NO_DELIVERY, DeliveryUrls
from worker.delivery import core
from worker.providers.base import Attachment, EmailProvider
from worker.ratelimit import Pacer

log = logging.getLogger(__name__)


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


class MessageDeliveries:
    """Sends ``messages.v1`` messages, one at a time, through the shared core."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: EmailProvider,
        pacer: Pacer,
        settings: Settings,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.core = core.DeliveryCore(provider, pacer, settings)
        self._types: dict[uuid.UUID, TypeContext] = {}
        # Until this monotonic time the provider's quota is spent (0: it is not).
        self._quota_until = 0.0
        self._quota_reason = ""
        self._public_base = settings.public_base_url.rstrip("/")

    async def send(self, event: MessageRequested) -> None:
        with bound(sponsor_id=event.sponsor_id, message_id=str(event.message_id)):
            await self._send(event)

    async def _send(self, event: MessageRequested) -> None:
        async with self.sessions() as session:
            found = await repository.message_to_send(session, event.message_id)
            if found is None:
                return  # sent, failed or suppressed already, or gone with its type
            message, message_type, sponsor = found
            category = message_type.preference_category
            checks = await repository.send_checks(
                session,
                message.sponsor_id,
                message.to_email,
                transactional=message_type.category == "transactional",
                preference_category=category,
            )
        if checks.suppressed:
            await self._record(message.id, "suppressed", error="the address is suppressed")
            return
        if category is not None:
            decision = preferences.decide(checks.opted_out, checks.frequency)
            if decision == "suppress":
                error = f"the recipient opted out of {category}"
                await self._record(message.id, "suppressed", error=error)
                return
            if decision == "hold":
                await self._record(message.id, "held", error=f"{checks.frequency} {category}")
                return
        context = self._context(message_type, sponsor)
        recipient = Recipient(NO_DELIVERY, message.to_email, _fields(message, checks))
        emails, failed = self.core.render(
            context, [recipient], lambda n_links: self._urls(message, category, n_links)
        )
        if failed:
            await self._record(message.id, "failed", error=failed[0][1])
            return
        email = emails[0]
        # The provider echoes this tag in its webhooks: how they find the message.
        email.campaign_id = tracking_tag(message.id)
        email.reply_to = message.reply_to or context.reply_to
        email.attachments = _attachments(message)
        if time.monotonic() < self._quota_until:
            # The quota is spent: the provider would refuse it, so it is not asked.
            await self._wait_for_quota(event)
            return
        started = time.perf_counter()
        try:
            results = await self.core.send(emails, str(message.id))
        except QuotaExceeded as exc:
            await self._quota_exhausted(event, exc)
            return
        except TransientProviderError as exc:
            # Retried with the same key until SEND_MAX_TRIES; next, on a timer.
            if await self._retry_later(event, exc):
                return
            failed = core.all_failed(emails, exc)
        except ProviderError as exc:
            failed = core.all_failed(emails, exc)
        else:
            self._quota_cleared()
            sent, failed = core.outcome(results)
            if sent:
                await self._record(
                    message.id,
                    "sent",
                    provider_message_id=sent[0][1],
                    links=context.message.links,
                )
                self.core.count(1, [], time.perf_counter() - started)
                return
        await self._record(message.id, "failed", error=failed[0][1] if failed else "no answer")
        self.core.count(0, failed, time.perf_counter() - started)

    async def _retry_later(self, event: MessageRequested, exc: ProviderError) -> bool:
        """Set the message's retry timer; False once its retries are used up."""
        if event.attempt >= self.settings.message_retry_attempts:
            return False
        delay = retries.backoff_seconds(self.settings.message_retry_base_seconds, event.attempt)
        reason = f"{exc.code}: {exc.message}"
        due = datetime.now(UTC) + timedelta(seconds=delay)
        async with self.sessions.begin() as session:
            await retries.retry_later(session, event, event.attempt + 1, due)
            await repository.note_retry(session, event.message_id, reason)
        log.warning("message retry %d in %.0fs: %s", event.attempt + 1, delay, reason)
        return True

    async def _quota_exhausted(self, event: MessageRequested, exc: QuotaExceeded) -> None:
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
        await self._wait_for_quota(event)

    async def _wait_for_quota(self, event: MessageRequested) -> None:
        """Keep the message queued, on a timer due when the quota window ends."""
        due = datetime.now(UTC) + timedelta(seconds=max(self._quota_until - time.monotonic(), 0))
        async with self.sessions.begin() as session:
            # Not an attempt spent: a quota says nothing of this message.
            await retries.retry_later(session, event, event.attempt, due)
            await repository.note_retry(session, event.message_id, self._quota_reason)

    def _quota_cleared(self) -> None:
        if self._quota_until:
            self._quota_until = 0.0
            metrics.PROVIDER_QUOTA_EXHAUSTED.labels(self.core.provider.name).set(0)
            log.info("provider quota available again: messages are sent")

    async def _record(
        self,
        message_id: uuid.UUID,
        status: str,
        *,
        provider_message_id: str | None = None,
        error: str | None = None,
        links: Sequence[str] = (),
    ) -> None:
        async with self.sessions.begin() as session:
            if not await repository.record_outcome(
                session, message_id, status, provider_message_id, error, links
            ):
                log.info("message %s: already recorded by another copy", message_id)

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

    def _context(self, message_type: MessageType, sponsor: Sponsor) -> TypeContext:
        """The type compiled, from the cache while the type is unchanged."""
        cached = self._types.get(message_type.id)
        if cached is not None and cached.version == message_type.updated_at:
            return cached
        from_name = message_type.from_name or sponsor.from_name or ""
        reply_to = message_type.reply_to or sponsor.reply_to
        name, address = single_line(from_name), single_line(sponsor.from_email)
        context = TypeContext(
            tag=f"message:{message_type.key}",
            sender=formataddr((name, address)),
            sender_name=name,
            sender_address=address,
            reply_to=single_line(reply_to) if reply_to else None,
            message=compile_message(
                content_of(message_type),
                template_logic.brand_for(sponsor),
                preferences=message_type.preference_category is not None,
            ),
            version=message_type.updated_at,
            category=message_type.category,
            preference_category=message_type.preference_category,
        )
        self._types[message_type.id] = context
        return context


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
