"""The delivery core: render → pace → provider → outcome, for any kind of message.

It knows recipients (``Recipient``), a small ``MessageContext`` (who sends,
the compiled message, the headers) and the provider; it knows nothing of
campaigns, batches or Kafka. A campaign batch (``batches.CampaignBatches``)
is one user; a one-to-one message kind would be another, with its own
context, idempotency key and record of the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from service import metrics
from service.campaigns.sending_repository import Recipient
from service.errors import ProviderError, RateLimited, RenderError, TransientProviderError
from service.settings import Settings
from service.templates import logic as template_logic
from service.templates.compiled import CompiledMessage, ProviderTemplate
from service.templates.urls import DeliveryUrls
from worker.providers import templates_of
from worker.providers.base import EmailProvider, OutgoingEmail, SendResult, StoredTemplateProvider
from worker.ratelimit import Pacer

log = logging.getLogger(__name__)

# A delivery that did not go out, and why ("code: message").
Failure = tuple[int, str]


class MessageContext(Protocol):
    """What the core needs of whatever its messages belong to (a campaign today)."""

    tag: str  # carried by each message (``OutgoingEmail.campaign_id``)
    sender: str
    sender_name: str
    sender_address: str
    reply_to: str | None
    message: CompiledMessage
    # The message as a provider template and the id it is stored under; while
    # ``template_id`` is None, messages go out whole.
    template: ProviderTemplate | None
    template_id: str | None

    def headers(self, urls: DeliveryUrls) -> dict[str, str]: ...


class DeliveryCore:
    """Renders, paces and sends through the one provider; shared by every message kind."""

    def __init__(self, provider: EmailProvider, pacer: Pacer, settings: Settings) -> None:
        self.provider = provider
        self.pacer = pacer
        self.settings = settings
        self.urls = template_logic.url_builder(settings)
        self._as_json: bool = getattr(provider, "accepts_json_parts", False)
        # A provider that limits a template variable's length (Resend); None: no limit.
        templates = templates_of(provider)
        self._value_limit: int | None = (
            templates.max_variable_chars if isinstance(templates, StoredTemplateProvider) else None
        )

    def render(
        self,
        context: MessageContext,
        recipients: Sequence[Recipient],
        urls_of: Callable[[int], DeliveryUrls] | None = None,
    ) -> tuple[list[OutgoingEmail], list[Failure]]:
        """Render every recipient; one that fails to render fails alone.

        ``urls_of(n_links)`` gives the URLs of a message that is no delivery (a
        transactional message signs its own); deliveries sign theirs here.
        """
        emails: list[OutgoingEmail] = []
        failed: list[Failure] = []
        n_links = len(context.message.links)
        tag = context.tag
        template, template_id = context.template, context.template_id
        parts = (template.html, template.text) if template is not None else None
        for recipient in recipients:
            if urls_of is None:
                urls = self.urls.for_delivery(recipient.delivery_id, n_links)
            else:
                urls = urls_of(n_links)
            email = OutgoingEmail(
                delivery_id=recipient.delivery_id,
                campaign_id=tag,
                sender=context.sender,
                to=recipient.email,
                subject="",
                reply_to=context.reply_to,
                headers=context.headers(urls),
                sender_name=context.sender_name,
                sender_address=context.sender_address,
            )
            try:
                values: list[str] | None = None
                if template is not None and template_id is not None:
                    subject, values = context.message.variables(template, recipient.fields, urls)
                    # A lead changed after the round chose its template: that one
                    # message goes whole rather than be refused by the provider.
                    limit = self._value_limit
                    if limit is not None and values and max(map(len, values)) > limit:
                        values = None
                    else:
                        email.subject, email.template_id = subject, template_id
                        email.template_parts = parts
                        email.variables = dict(zip(template.keys, values, strict=True))
                if values is None:
                    rendered = context.message.render(recipient.fields, urls, as_json=self._as_json)
                    email.subject = rendered.subject
                    email.html, email.text = rendered.html, rendered.text
                    email.html_json, email.text_json = rendered.html_json, rendered.text_json
            except RenderError as exc:
                failed.append((recipient.delivery_id, f"render_error: {exc}"))
                continue
            emails.append(email)
        return emails, failed

    async def send(self, emails: list[OutgoingEmail], key: str) -> list[SendResult]:
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

    def count(self, n_sent: int, failed: Iterable[Failure], seconds: float) -> None:
        """Metrics for rows that really changed state (a replayed batch counts nothing)."""
        provider = self.provider.name
        if n_sent:
            metrics.MESSAGES_SENT.labels(provider).inc(n_sent)
        for _, error in failed:
            reason = error.split(":", 1)[0].strip()[:40] or "unknown"
            metrics.MESSAGES_FAILED.labels(provider, reason).inc()
        metrics.BATCH_DURATION.observe(seconds)


def outcome(results: Iterable[SendResult]) -> tuple[list[tuple[int, str]], list[Failure]]:
    """The provider's answer split into (delivery id, message id) sent and failures."""
    sent: list[tuple[int, str]] = []
    failed: list[Failure] = []
    for result in results:
        if result.provider_message_id:
            sent.append((result.delivery_id, result.provider_message_id))
        if result.error:
            failed.append((result.delivery_id, result.error))
    return sent, failed


def all_failed(emails: Iterable[OutgoingEmail], error: ProviderError) -> list[Failure]:
    """Every message of a request the provider refused as a whole, failed with its reason."""
    return [(email.delivery_id, f"{error.code}: {error.message}") for email in emails]
