"""Resend adapter: sends batches through the official SDK over a pooled HTTP client.

The SDK (``resend.Batch.send_async``) reads module globals (``resend.api_key``,
``resend.api_url``, ``resend.default_async_http_client``). Its own async client
opens a fresh connection per request, which costs a TLS handshake per batch, so
this module installs :class:`PooledHTTPXClient`, keep-alive ``httpx``
connections shared by every request.

Because those globals are process-wide, the provider re-installs its own values
right before each call. Nothing awaits between that and the moment the SDK reads
them, so several providers can share one event loop (not several threads).

Templates (``TemplateProvider``) are created with ``POST /templates``, then
published; a message sent with one carries ``template: {id, variables}``.

Error mapping (SDK ``ResendError`` -> ``service.errors``):

* ``daily_quota_exceeded`` / ``monthly_quota_exceeded`` (sent with 429) -> ``QuotaExceeded``
* other 429 -> ``RateLimited`` (``retry-after`` seconds, else ``ratelimit-reset``)
* 5xx, timeouts and connection errors (the SDK reports them as 500
  ``HttpClientError``), 409 ``concurrent_idempotent_requests`` -> ``TransientProviderError``
* any other 4xx, 409 ``invalid_idempotent_request`` included -> ``PermanentProviderError``
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import orjson
import resend
from resend.exceptions import NoContentError, ResendError
from resend.http_client_async import AsyncHTTPClient

from service.errors import (
    PermanentProviderError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from worker.providers.base import OutgoingEmail, SendResult

__all__ = ["PooledHTTPXClient", "ResendProvider"]

# Sized for the worker's concurrency: ~32 batches in flight at once.
MAX_CONNECTIONS = 32
SHARDS = 4
KEEPALIVE_EXPIRY_SECONDS = 30.0

_QUOTA_ERRORS = frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAG_MAX_LEN = 256

BatchValidation = Literal["strict", "permissive"]


class PooledHTTPXClient(AsyncHTTPClient):
    """The SDK's async client interface over long-lived keep-alive ``httpx.AsyncClient``s.

    The connections are split over ``shards`` clients, each request going to
    the least busy one: httpcore's pool does per-request bookkeeping that grows
    with the square of its connection count, and at 32 connections that was
    half the CPU of a 100-email batch. Four pools of eight halve it.
    ``shards=1`` is a plain single pool.
    """

    def __init__(
        self, timeout: float = 30.0, max_connections: int = MAX_CONNECTIONS, shards: int = SHARDS
    ) -> None:
        shards = max(1, min(shards, max_connections))
        per_shard = -(-max_connections // shards)  # ceil: never fewer connections in all
        limits = httpx.Limits(
            max_connections=per_shard,
            max_keepalive_connections=per_shard,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        )
        self._clients = [
            httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits) for _ in range(shards)
        ]
        self._in_flight = [0] * shards

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        """Send one request; transport failures surface as ``RuntimeError``.

        The SDK turns any exception raised here into ``ResendError(code=500,
        error_type="HttpClientError")``. httpx timeout messages are often empty,
        so the exception class name is kept in the text for the logs.
        """
        shard = min(range(len(self._clients)), key=self._in_flight.__getitem__)
        client = self._clients[shard]
        self._in_flight[shard] += 1
        try:
            if files is not None or data is not None:
                resp = await client.request(method, url, headers=headers, files=files, data=data)
            elif json is not None:
                # orjson: the stdlib encoder took ~2 ms per 100-email batch.
                resp = await client.request(
                    method,
                    url,
                    headers={**headers, "Content-Type": "application/json"},
                    content=orjson.dumps(json),
                )
            else:
                resp = await client.request(method, url, headers=headers)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._in_flight[shard] -= 1
        # A response and its stream point at each other, and through the response
        # hangs the request with its body (4 MB for a batch): cut the loop so the
        # body goes now, not at the next garbage collection.
        resp.stream = httpx.ByteStream(b"")
        return resp.content, resp.status_code, resp.headers

    async def aclose(self) -> None:
        """Close every pooled connection."""
        for client in self._clients:
            await client.aclose()


class ResendProvider:
    """``EmailProvider`` for Resend's ``POST /emails/batch``, and ``TemplateProvider``."""

    name = "resend"
    # Bodies may come encoded (OutgoingEmail.html_json): spliced into the request
    # as they are, instead of encoding 20 KB strings once more per message.
    accepts_json_parts = True

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
        """Send ``emails`` in one request; see the module docstring for errors."""
        if not emails:
            return []
        params = [_to_params(email) for email in emails]
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
        return _results(emails, response)

    async def create_template(self, name: str, html: str, text: str, keys: Sequence[str]) -> str:
        """Create and publish a template whose variables are ``keys`` (strings, "" by default)."""
        params: resend.Templates.CreateParams = {
            "name": name,
            "html": html,
            "text": text,
            "variables": [{"key": key, "type": "string", "fallback_value": ""} for key in keys],
        }
        self._install()
        try:
            created = await resend.Templates.create_async(params)
            self._install()
            await resend.Templates.publish_async(created["id"])
        except ResendError as exc:
            raise _map_error(exc) from exc
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


@functools.lru_cache(maxsize=1024)  # the same campaign id for every email of a batch
def _tag_value(value: str) -> str:
    # Resend rejects the whole email for any other character; a UUID or an int
    # passes untouched, anything else is made safe rather than lost.
    return _TAG_UNSAFE.sub("_", value)[:_TAG_MAX_LEN] or "_"


def _to_params(email: OutgoingEmail) -> resend.Emails.SendParams:
    params: resend.Emails.SendParams = {
        "from": email.sender,
        "to": [email.to],
        "subject": email.subject,
        "tags": [
            {"name": "campaign_id", "value": _tag_value(email.campaign_id)},
            # Digits (and a sign) only: already a valid tag value.
            {"name": "delivery_id", "value": str(email.delivery_id)},
        ],
    }
    if email.template_id is not None:
        params["template"] = {"id": email.template_id, "variables": email.variables or {}}
    else:
        params["html"] = _body(email.html, email.html_json)
        # An empty text part is worse than none: clients would show a blank body.
        if email.text or email.text_json not in (None, b'""'):
            params["text"] = _body(email.text, email.text_json)
    if email.reply_to:
        params["reply_to"] = email.reply_to
    if email.headers:
        params["headers"] = dict(email.headers)
    return params


def _body(value: str, encoded: bytes | None) -> Any:
    return value if encoded is None else orjson.Fragment(encoded)


def _results(emails: Sequence[OutgoingEmail], response: Mapping[str, Any]) -> list[SendResult]:
    """Pair the answer's ids and per-email errors with ``emails``, in order.

    Resend documents ``data`` as the ids of the *created* emails only, with
    ``errors[].index`` pointing into the request; so ``data`` is compacted and
    the i-th id belongs to the i-th email that has no error. An answer with one
    entry per email (ids aligned by position) is accepted too. Any other shape
    cannot be paired safely: some emails may be out, and resending would send
    them twice, so the batch is refused as permanent (webhook events can still
    be matched through the ``delivery_id`` tag).
    """
    count = len(emails)
    raw_data = response.get("data")
    raw_errors = response.get("errors") or []
    data: list[Any] = raw_data if isinstance(raw_data, list) else []
    errors: dict[int, str] = {}
    for item in raw_errors if isinstance(raw_errors, list) else []:
        if not isinstance(item, dict):
            continue
        index = item.get("index")
        if isinstance(index, int) and 0 <= index < count and index not in errors:
            errors[index] = str(item.get("message") or "rejected by provider")

    accepted = [i for i in range(count) if i not in errors]
    if len(data) == len(accepted):
        ids = dict(zip(accepted, data, strict=True))
    elif len(data) == count:
        ids = {i: data[i] for i in accepted}
    else:
        raise PermanentProviderError(
            "unpairable_response",
            f"{len(data)} ids and {len(errors)} errors for a batch of {count}",
        )

    results: list[SendResult] = []
    for i, email in enumerate(emails):
        if i in errors:
            results.append(SendResult(delivery_id=email.delivery_id, error=errors[i]))
            continue
        entry = ids[i]
        message_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(message_id, str) and message_id:
            results.append(
                SendResult(delivery_id=email.delivery_id, provider_message_id=message_id)
            )
        else:
            results.append(
                SendResult(delivery_id=email.delivery_id, error="provider returned no message id")
            )
    return results


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
