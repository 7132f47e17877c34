"""Mailgun adapter: batch sending over Mailgun's HTTP API (``POST /v3/{domain}/messages``).

Mailgun has no official async SDK; this speaks its documented API with a
pooled ``httpx`` client: a ``multipart/form-data`` body, Basic auth
``api:<MAILGUN_API_KEY>``, ``https://api.mailgun.net`` or
``https://api.eu.mailgun.net`` (``MAILGUN_REGION``) unless ``MAILGUN_API_URL``
says otherwise. How a batch becomes requests is in ``mailgun_request``.

Mailgun answers one message id per request; it is recorded on every row of
the request (the webhook's ``v:delivery_id`` is what tells the rows apart).

Templates (``TemplateProvider``): Mailgun needs no stored template for a
campaign whose body is the same for all, because the body travels once per
request with ``%recipient.KEY%`` slots. ``create_template`` therefore makes no
request: it names the decision (``mailgun-batch:<hash>``), and each message
carries the template's parts (``OutgoingEmail.template_parts``).

Delivery is **at least once**: Mailgun has no idempotency key. Within one
process a retry of a batch with the same key sends only the requests Mailgun
has not accepted yet; a request whose answer was lost (a timeout after Mailgun
queued it) is sent again.

Error mapping (HTTP status -> ``service.errors``):

* 429 -> ``RateLimited`` (``Retry-After``, else ``X-RateLimit-Reset`` in
  seconds or milliseconds since the epoch, else "try again after N seconds");
  a 4xx whose message speaks of a quota or sending limit -> ``QuotaExceeded``
* 5xx, timeouts and connection errors -> ``TransientProviderError``
* 401, 403 and any other 4xx -> ``PermanentProviderError``
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Sequence

import httpx
import orjson

from service.errors import (
    PermanentProviderError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from worker.providers.accepted import AcceptedBatches
from worker.providers.base import OutgoingEmail, SendResult
from worker.providers.mailgun_request import MailgunRequest, encode_multipart, requests

__all__ = ["REGIONS", "MailgunProvider"]

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
MAX_CONNECTIONS = 32
_TRY_AGAIN = re.compile(r"try again after (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)
_QUOTA = re.compile(r"quota|sending limit|(daily|monthly|hourly) limit", re.IGNORECASE)


class MailgunProvider:
    """``EmailProvider`` and ``TemplateProvider`` for Mailgun (see the module docstring)."""

    name = "mailgun"

    def __init__(
        self,
        api_key: str,
        domain: str,
        *,
        region: str = "us",
        api_url: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if region not in REGIONS:
            raise ValueError(f"region must be 'us' or 'eu', not {region!r}")
        base = (api_url or REGIONS[region]).rstrip("/")
        self.url = f"{base}/v3/{domain}/messages"
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
        )
        self._http = httpx.AsyncClient(
            auth=httpx.BasicAuth("api", api_key), timeout=httpx.Timeout(timeout), limits=limits
        )
        self._batches = AcceptedBatches()

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]:
        """Send ``emails`` in as few requests as Mailgun allows; see the module docstring."""
        if not emails:
            return []
        batch = self._batches.of(idempotency_key)
        async with batch.lock:
            todo = [email for email in emails if email.delivery_id not in batch.accepted]
            for request in requests(todo):
                message_id = await self._post(request)
                for email in request.emails:
                    batch.accepted[email.delivery_id] = message_id
            return [
                SendResult(email.delivery_id, provider_message_id=batch.accepted[email.delivery_id])
                for email in emails
            ]

    async def _post(self, request: MailgunRequest) -> str:
        boundary = uuid.uuid4().hex
        body = encode_multipart(request.fields, boundary, request.files)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        try:
            response = await self._http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientProviderError(
                "connection_error", f"{type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code != 200:
            raise _map_error(response)
        try:
            message_id = str(orjson.loads(response.content)["id"]).strip().strip("<>")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message_id = ""
        if not message_id:
            # Queued (200) but no id to record: a retry would send it twice, so
            # the request is refused for good, as Resend's unpairable answers are.
            raise PermanentProviderError("unpairable_response", "a 200 without a message id")
        # The send answer has angle brackets; webhooks' message-id has none.
        return message_id

    async def create_template(self, name: str, html: str, text: str, keys: Sequence[str]) -> str:
        """Name the decision to send the body once per request; no request is made."""
        digest = hashlib.sha256(f"{html}\0{text}".encode()).hexdigest()[:24]
        return f"mailgun-batch:{digest}"

    async def remove_template(self, template_id: str) -> None:
        """Nothing is stored at Mailgun, so nothing is removed."""

    async def aclose(self) -> None:
        await self._http.aclose()


def _message(response: httpx.Response) -> str:
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:500] or response.reason_phrase
    if isinstance(answer, dict) and answer.get("message"):
        return str(answer["message"])[:500]
    return response.text[:500]


def _retry_after(response: httpx.Response, message: str) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    reset = response.headers.get("x-ratelimit-reset", "").strip()
    try:
        at = float(reset)
    except ValueError:
        at = 0.0
    if at > 0:
        # Seen as epoch milliseconds in recorded answers, read as seconds by an SDK.
        at = at / 1000 if at > 1e11 else at
        return max(at - time.time(), 0.0)
    found = _TRY_AGAIN.search(message)
    return float(found.group(1)) if found else None


def _map_error(response: httpx.Response) -> ProviderError:
    status = response.status_code
    message = _message(response)
    if 400 <= status < 500 and _QUOTA.search(message):
        return QuotaExceeded("quota_exceeded", message, status=status)
    if status == 429:
        return RateLimited("rate_limited", message, retry_after=_retry_after(response, message))
    if status == 401:
        return PermanentProviderError("unauthorized", message, status=status)
    if status == 403:
        return PermanentProviderError("forbidden", message, status=status)
    if 400 <= status < 500:
        return PermanentProviderError(f"http_{status}", message, status=status)
    return TransientProviderError(f"http_{status}", message, status=status)
