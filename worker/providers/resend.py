"""Resend adapter: sends batches through the official SDK over a pooled HTTP client.

The SDK (``resend.Batch.send_async``) reads module globals (``resend.api_key``,
``resend.api_url``, ``resend.default_async_http_client``). Its own async client
opens a fresh connection per request, which costs a TLS handshake per batch, so
the provider installs ``resend_http.PooledHTTPXClient``, keep-alive ``httpx``
connections shared by every request. The request body of a batch and the
pairing of the answer with its emails are in ``resend_request``.

Because those globals are process-wide, the provider re-installs its own values
right before each call. Nothing awaits between that and the moment the SDK reads
them, so several providers can share one event loop (not several threads).

The batch endpoint takes no attachments, so an email that carries some goes
alone through ``POST /emails``, one request each, with its own idempotency key
derived from the batch's (``resend_request.single_key``); the rest of the batch
still goes as one batch under the batch's key. A 400/422 for such an email is
that email's ``SendResult.error``: the others went out.

Templates (``TemplateProvider``) are created with ``POST /templates``, then
published; a message sent with one carries ``template: {id, variables}``. A
sending-access key cannot manage templates (401 ``restricted_api_key``): the
first refusal is logged once and every later ``create_template`` of the process
is refused without a request, so campaigns send whole bodies.

Error mapping (SDK ``ResendError`` -> ``service.errors``):

* ``daily_quota_exceeded`` / ``monthly_quota_exceeded`` (sent with 429) -> ``QuotaExceeded``
* the key or the account cannot send (401/403 ``invalid_api_key``, ``missing_api_key``,
  ``restricted_api_key``, ``suspended_api_key``, ``invalid_from_address``, 403 domain
  not verified or testing-only account) -> ``AccountError``
* other 429 -> ``RateLimited`` (``retry-after`` seconds, else ``ratelimit-reset``)
* 5xx, timeouts and connection errors (the SDK reports them as 500
  ``HttpClientError``), 409 ``concurrent_idempotent_requests`` -> ``TransientProviderError``
* any other 4xx, 409 ``invalid_idempotent_request`` included -> ``PermanentProviderError``
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Literal

import resend
from resend.exceptions import NoContentError, ResendError
from resend.http_client_async import AsyncHTTPClient

from service.errors import (
    AccountError,
    PermanentProviderError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from service.templates.provider_limits import MAX_TEMPLATE_VALUE
from worker.providers.base import OutgoingEmail, SendResult
from worker.providers.resend_http import PooledHTTPXClient
from worker.providers.resend_request import email_params, pair_results, single_key

__all__ = ["ResendProvider"]

log = logging.getLogger(__name__)

_QUOTA_ERRORS = frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})
_ACCOUNT_ERRORS = frozenset(
    {
        "invalid_api_key",
        "missing_api_key",
        "restricted_api_key",
        "suspended_api_key",
        "invalid_from_address",
    }
)
# 403 ``validation_error`` messages that are about the account, not the email.
_ACCOUNT_MESSAGES = ("domain is not verified", "only send testing emails")
_RESTRICTED = "restricted_api_key"

BatchValidation = Literal["strict", "permissive"]


class ResendProvider:
    """``EmailProvider`` for Resend's ``POST /emails/batch``, and ``TemplateProvider``."""

    name = "resend"
    # Resend's limit on a template variable's string value (``StoredTemplateProvider``).
    max_variable_chars = MAX_TEMPLATE_VALUE
    # Bodies may come encoded (OutgoingEmail.html_json): spliced into the request
    # as they are, instead of encoding 20 KB strings once more per message.
    accepts_json_parts = True
    # ``/emails/batch`` takes a whole body per email and an idempotency key per
    # request: transactional messages go out in batches (``worker.delivery.message_sends``).
    batches_messages = True

    def __init__(
        self,
        api_key: str,
        api_url: str,
        timeout: float = 30.0,
        batch_validation: str = "permissive",
    ) -> None:
        if batch_validation not in ("strict", "permissive"):
            raise ValueError(
                f"batch_validation must be 'strict' or 'permissive', not {batch_validation!r}"
            )
        self._api_key = api_key
        self._api_url = api_url.rstrip("/")
        self._batch_validation: BatchValidation = (
            "strict" if batch_validation == "strict" else "permissive"
        )
        self._http = PooledHTTPXClient(timeout=timeout)
        # Set by the first 401 ``restricted_api_key`` on a template route.
        self.templates_refused: AccountError | None = None
        previous: AsyncHTTPClient | None = resend.default_async_http_client
        if isinstance(previous, PooledHTTPXClient):
            # Another provider's pool, maybe closed by the time this one closes.
            previous = getattr(resend, "_auto_async_http_client", None)
        self._previous_client = previous
        self._install()

    def _install(self) -> None:
        resend.api_key = self._api_key
        resend.api_url = self._api_url
        resend.default_async_http_client = self._http

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]:
        """Send ``emails`` in one request (those with attachments one by one); see the
        module docstring for errors."""
        if not emails:
            return []
        for email in emails:
            if email.attachments:
                return await self._send_mixed(emails, idempotency_key)
        return await self._send_bulk(emails, idempotency_key)

    async def _send_mixed(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]:
        """The batch without the emails that carry attachments, then those one by one.

        One after the other, not at once: each is a request against the team's
        rate limit. A retry of the batch splits it the same way, so every request
        is replayed under the key it had.
        """
        results: list[SendResult | None] = [None] * len(emails)
        bulk = [i for i, email in enumerate(emails) if not email.attachments]
        if bulk:
            sent = await self._send_bulk([emails[i] for i in bulk], idempotency_key)
            for i, result in zip(bulk, sent, strict=True):
                results[i] = result
        for i, email in enumerate(emails):
            if results[i] is None:
                results[i] = await self._send_one(
                    email, single_key(idempotency_key, email.delivery_id)
                )
        return [result for result in results if result is not None]

    async def _send_one(self, email: OutgoingEmail, key: str) -> SendResult:
        options: resend.Emails.SendOptions = {"idempotency_key": key}
        self._install()
        try:
            response = await resend.Emails.send_async(email_params(email), options)
        except ResendError as exc:
            error = _map_error(exc)
            if type(error) is PermanentProviderError and error.status in (400, 422):
                return SendResult(email.delivery_id, error=f"{error.code}: {error.message}")
            raise error from exc
        except NoContentError as exc:
            raise TransientProviderError("no_content", str(exc)) from exc
        message_id = response.get("id")
        if not isinstance(message_id, str) or not message_id:
            return SendResult(email.delivery_id, error="provider returned no message id")
        return SendResult(email.delivery_id, provider_message_id=message_id)

    async def _send_bulk(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]:
        params = [email_params(email) for email in emails]
        options: resend.Batch.SendOptions = {
            "idempotency_key": idempotency_key,
            "batch_validation": self._batch_validation,
        }
        self._install()
        try:
            response = await resend.Batch.send_async(params, options)
        except ResendError as exc:
            raise _map_error(exc) from exc
        except NoContentError as exc:
            raise TransientProviderError("no_content", str(exc)) from exc
        return pair_results(emails, response)

    async def create_template(
        self,
        name: str,
        html: str,
        text: str,
        keys: Sequence[str],
        on_created: Callable[[str], Awaitable[None]] | None = None,
    ) -> str:
        """Create and publish a template whose variables are ``keys`` (strings, "" by default);
        ``on_created`` gets its id between the two.

        Raises ``AccountError`` without a request once the key was found to be
        sending-only.
        """
        if self.templates_refused is not None:
            raise self.templates_refused
        params: resend.Templates.CreateParams = {
            "name": name,
            "html": html,
            "text": text,
            "variables": [{"key": key, "type": "string", "fallback_value": ""} for key in keys],
        }
        self._install()
        try:
            created = await resend.Templates.create_async(params)
            if on_created is not None:
                await on_created(created["id"])
            self._install()
            await resend.Templates.publish_async(created["id"])
        except ResendError as exc:
            error = _map_error(exc)
            if error.code == _RESTRICTED and isinstance(error, AccountError):
                self.templates_refused = error
                log.error(
                    "the Resend API key has sending access only: it cannot manage templates, "
                    "so every campaign sends whole bodies (give it full access to use templates)"
                )
            raise error from exc
        return created["id"]

    async def remove_template(self, template_id: str) -> None:
        """Delete a template; one already gone counts as removed."""
        self._install()
        try:
            await resend.Templates.remove_async(template_id)
        except ResendError as exc:
            if _status(exc.code) != 404:
                raise _map_error(exc) from exc

    async def aclose(self) -> None:
        """Close the connection pool and give the SDK back its previous client."""
        if resend.default_async_http_client is self._http:
            resend.default_async_http_client = self._previous_client
        await self._http.aclose()


def _status(code: object) -> int | None:
    try:
        return int(str(code))
    except ValueError:
        return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _seconds(value: str | None) -> float | None:
    """A header's delay in seconds: a number, or an HTTP date for ``retry-after``."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


def _map_error(exc: ResendError) -> ProviderError:
    status = _status(exc.code)
    error_type = str(exc.error_type or "")
    message = str(exc.message or exc)
    if error_type in _QUOTA_ERRORS:
        return QuotaExceeded(error_type, message, status=status)
    if error_type in _ACCOUNT_ERRORS or (
        status == 403 and any(part in message for part in _ACCOUNT_MESSAGES)
    ):
        return AccountError(error_type or "account_error", message, status=status)
    if status == 429:
        headers = exc.headers or {}
        retry_after = _seconds(_header(headers, "retry-after"))
        if retry_after is None:
            retry_after = _seconds(_header(headers, "ratelimit-reset"))
        return RateLimited(error_type or "rate_limit_exceeded", message, retry_after=retry_after)
    if status == 409 and error_type == "concurrent_idempotent_requests":
        return TransientProviderError(error_type, message, status=status)
    if status is not None and 400 <= status < 500:
        return PermanentProviderError(error_type or "client_error", message, status=status)
    # 5xx, the SDK's wrapped transport failures and codes we cannot read are
    # retried: the idempotency key makes a retry safe.
    return TransientProviderError(error_type or "provider_error", message, status=status)
