"""SendGrid adapter: ``POST /v3/mail/send`` over a keep-alive ``httpx`` pool, Bearer auth.

A batch whose emails carry a template goes out as one request, the body once
and each recipient's variables as ``substitutions``; an email with a whole
body is a request of its own (``sendgrid_request``). The "templates" are kept
here, in memory, not at SendGrid: ``create_template`` names one by a hash of
its content, so every sender process that compiles the same campaign gets
the same id and can ``adopt_template`` a round's decision made elsewhere.

SendGrid answers 202 with an ``X-Message-Id`` per request, recorded on every
row of that request; webhook events find their delivery by the
``delivery_id`` custom arg. SendGrid has no idempotency key, so the provider
remembers, per idempotency key, which deliveries a request already took: a
batch retried by this process sends only what did not go out.

Error mapping (status -> ``service.errors``):

* 429 -> ``RateLimited`` (``Retry-After`` seconds, else ``X-RateLimit-Reset``, a unix time)
* 5xx, timeouts, connection errors -> ``TransientProviderError``
* 401/403 -> ``PermanentProviderError`` raised for the whole batch (the key or
  the account is at fault, not the recipients); "Maximum credits exceeded" ->
  ``QuotaExceeded``
* other 4xx -> that request's recipients fail with the message SendGrid gave
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from service.errors import (
    PermanentProviderError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from worker.providers.base import OutgoingEmail, SendResult
from worker.providers.sendgrid_request import (
    LocalTemplate,
    fits,
    substituted,
    substitutions,
    template_body,
    whole_body,
)

__all__ = ["SendGridProvider"]

# Whole-body requests of one batch in flight at once.
MAX_CONCURRENT_REQUESTS = 16
# Deliveries remembered as sent, per idempotency key: about a window of batches.
_SENT_MEMORY = 100_000
_ACCOUNT_STATUSES = frozenset({401, 403})


class SendGridProvider:
    """``EmailProvider`` for SendGrid's Mail Send v3, and ``TemplateProvider`` (local templates)."""

    name = "sendgrid"

    def __init__(self, api_key: str, api_url: str, timeout: float = 30.0) -> None:
        self._url = api_url.rstrip("/") + "/v3/mail/send"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        self._templates: dict[str, LocalTemplate] = {}
        self._sent: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._requests = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)

    # ------------------------------------------------------------- templates

    async def create_template(self, name: str, html: str, text: str, keys: Sequence[str]) -> str:
        """Keep the body here; its id is a hash of it, the same in every process."""
        return self.adopt_template(html, text, keys)

    def adopt_template(self, html: str, text: str, keys: Sequence[str]) -> str:
        """Know a template (made by any process); its id."""
        digest = hashlib.sha256(orjson.dumps([html, text, list(keys)])).hexdigest()[:32]
        template_id = f"sg-local-{digest}"
        self._templates[template_id] = LocalTemplate(html, text, tuple(keys))
        return template_id

    async def remove_template(self, template_id: str) -> None:
        self._templates.pop(template_id, None)

    # ------------------------------------------------------------- sending

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]:
        """Send what this key has not sent yet; see the module docstring for errors."""
        done = {e.delivery_id: self._sent.get((idempotency_key, e.delivery_id)) for e in emails}
        requests = self._requests_for([e for e in emails if done[e.delivery_id] is None])
        outcomes = await asyncio.gather(
            *(self._send(body, group) for body, group in requests), return_exceptions=True
        )
        errors: dict[int, str] = {}
        raised: list[BaseException] = []
        for (_, group), outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, str):
                for email in group:
                    done[email.delivery_id] = outcome
                    self._remember(idempotency_key, email.delivery_id, outcome)
            elif isinstance(outcome, PermanentProviderError) and not _whole_batch(outcome):
                errors.update((email.delivery_id, outcome.message) for email in group)
            else:
                raised.append(outcome)
        if raised:
            raise _first(raised)
        return [
            SendResult(e.delivery_id, error=errors[e.delivery_id])
            if e.delivery_id in errors
            else SendResult(e.delivery_id, provider_message_id=done[e.delivery_id])
            for e in emails
        ]

    def _requests_for(
        self, emails: Sequence[OutgoingEmail]
    ) -> list[tuple[dict[str, Any], list[OutgoingEmail]]]:
        """The request bodies for ``emails``, each with the emails it carries."""
        requests: list[tuple[dict[str, Any], list[OutgoingEmail]]] = []
        shared: dict[tuple[str, str, str | None, str], list[tuple[OutgoingEmail, Any]]] = {}
        for email in emails:
            template = self._templates.get(email.template_id or "")
            if email.template_id is not None and template is None:
                # Not adopted here (see module docstring): cannot be rendered.
                raise PermanentProviderError(
                    "unknown_template", f"template {email.template_id} is not known here"
                )
            if template is None:
                requests.append((whole_body(email), [email]))
                continue
            subs = substitutions(template, email.variables or {})
            if email.attachments or not fits(subs):
                html, text = substituted(template, subs)
                requests.append((whole_body(email, html, text), [email]))
                continue
            key = (email.template_id or "", email.sender, email.reply_to, email.campaign_id)
            shared.setdefault(key, []).append((email, subs))
        for (template_id, *_), members in shared.items():
            group = [email for email, _ in members]
            body = template_body(self._templates[template_id], group, [s for _, s in members])
            requests.append((body, group))
        return requests

    async def _send(self, body: dict[str, Any], group: list[OutgoingEmail]) -> str:
        """POST one request; its ``X-Message-Id``."""
        async with self._requests:
            try:
                response = await self._http.post(
                    self._url, content=orjson.dumps(body), headers=self._headers
                )
            except httpx.HTTPError as exc:
                # httpx timeout messages are often empty: keep the class name.
                message = f"{type(exc).__name__}: {exc}"
                raise TransientProviderError("transport_error", message) from exc
        if response.status_code in (200, 202):
            # Accepted: the messages are out even if the id were missing.
            return response.headers.get("x-message-id") or "sendgrid-accepted"
        raise _map_error(response)

    def _remember(self, key: str, delivery_id: int, message_id: str) -> None:
        self._sent[(key, delivery_id)] = message_id
        while len(self._sent) > _SENT_MEMORY:
            self._sent.popitem(last=False)

    async def aclose(self) -> None:
        await self._http.aclose()


def _whole_batch(error: PermanentProviderError) -> bool:
    """An error about the account or the key, not the recipients: the batch fails as one."""
    return isinstance(error, QuotaExceeded) or error.status in _ACCOUNT_STATUSES


def _first(raised: list[BaseException]) -> BaseException:
    """The error that speaks for the batch: an account error, then a rate limit, then any."""
    for kind in (PermanentProviderError, RateLimited, ProviderError):
        for exc in raised:
            if isinstance(exc, kind):
                return exc
    return raised[0]


def _message(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:500] or response.reason_phrase
    errors = body.get("errors") if isinstance(body, dict) else None
    messages = [
        str(e.get("message")) + (f" ({e['field']})" if e.get("field") not in (None, "null") else "")
        for e in errors or []
        if isinstance(e, dict) and e.get("message")
    ]
    return "; ".join(messages)[:500] or response.reason_phrase


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    for name, absolute in (("retry-after", False), ("x-ratelimit-reset", True)):
        try:
            value = float(headers.get(name, ""))
        except ValueError:
            continue
        return max(value - now if absolute else value, 0.0)
    return None


def _map_error(response: httpx.Response) -> ProviderError:
    status = response.status_code
    message = _message(response)
    if "credits exceeded" in message.lower():
        return QuotaExceeded("credits_exceeded", message, status=status)
    if status == 429:
        return RateLimited(
            "rate_limited", message, retry_after=_retry_after(response.headers, time.time())
        )
    if 400 <= status < 500:
        code = {401: "unauthorized", 403: "forbidden", 413: "payload_too_large"}.get(
            status, "rejected"
        )
        return PermanentProviderError(code, message, status=status)
    return TransientProviderError("provider_error", message, status=status)
