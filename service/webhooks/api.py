"""Provider webhooks: verify, dedupe, produce to ``provider-events.v1``, then answer.

``POST /api/v1/webhooks/resend`` (Svix signatures) and
``POST /api/v1/webhooks/mailgun`` (an HMAC inside the body, ``mailgun.py``).

2xx only once the broker has acknowledged the event (``acks=all``); any
failure to produce within ``WEBHOOK_PRODUCE_TIMEOUT_SECONDS`` is a 503 so the
provider retries. Duplicates (same ``svix-id``) are answered 200 at once when
this process has seen them; the ingester dedupes the rest by event id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import TOPIC_PROVIDER_EVENTS
from schemas.http import ErrorBody
from service.errors import BadRequest, InvalidSignature, PayloadTooLarge, Unauthorized
from service.http import autocommit
from service.settings import Settings
from service.webhooks import logic, mailgun, repository, svix

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

MAX_BODY = 1024 * 1024
_SEEN_MAX = 50_000
# How often one process deletes the webhook tokens that have expired.
_EXPIRE_EVERY_SECONDS = 60.0


def _seen(request: Request) -> OrderedDict[str, None]:
    state = request.app.state
    if not hasattr(state, "webhook_seen"):
        state.webhook_seen = OrderedDict()
    seen: OrderedDict[str, None] = state.webhook_seen
    return seen


def _unavailable(message: str) -> JSONResponse:
    body = {"error": {"code": "temporarily_unavailable", "message": message, "field": None}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.post(
    "/resend",
    status_code=200,
    responses={
        400: {"model": ErrorBody, "description": "the body is not JSON"},
        401: {"model": ErrorBody, "description": "missing or invalid Svix signature"},
        413: {"model": ErrorBody, "description": "the body is over 1 MiB"},
        503: {"description": "not stored (no secret set, or the broker is away): retry"},
    },
)
async def resend_webhook(request: Request) -> JSONResponse:
    """A Resend event: 200 once durable, 401 if unsigned, 503 if it could not be stored."""
    settings: Settings = request.app.state.settings
    if settings.resend_webhook_secret is None:
        return _unavailable("RESEND_WEBHOOK_SECRET is not set on this server")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise PayloadTooLarge("payload_too_large", "webhook bodies are limited to 1 MiB")
    try:
        msg_id = svix.verify(
            settings.resend_webhook_secret.get_secret_value(), request.headers, body
        )
    except InvalidSignature as exc:
        raise Unauthorized("invalid_signature", str(exc)) from None
    seen = _seen(request)
    if msg_id in seen:
        return JSONResponse({"status": "duplicate"})
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("invalid_json", "the body is not JSON") from None
    event = logic.to_event(msg_id, payload)
    try:
        await asyncio.wait_for(
            request.app.state.producer.send([(TOPIC_PROVIDER_EVENTS, msg_id, event.to_bytes())]),
            settings.webhook_produce_timeout_seconds,
        )
    except Exception as exc:  # the provider retries on 5xx; nothing is lost
        log.warning("webhook %s not stored: %s", msg_id, exc)
        return _unavailable("the event could not be stored; retry later")
    seen[msg_id] = None
    while len(seen) > _SEEN_MAX:
        seen.popitem(last=False)
    return JSONResponse({"status": "accepted"})


@router.post(
    "/mailgun",
    status_code=200,
    responses={
        400: {"model": ErrorBody, "description": "the body is not JSON or has no event"},
        401: {"model": ErrorBody, "description": "missing, invalid or stale signature"},
        406: {"model": ErrorBody, "description": "a replay: this token was seen before"},
        413: {"model": ErrorBody, "description": "the body is over 1 MiB"},
        503: {"description": "not stored (no signing key set, or the broker is away): retry"},
    },
)
async def mailgun_webhook(request: Request) -> JSONResponse:
    """A Mailgun event: 200 once durable, 401 if unsigned, 406 if replayed, 503 to retry.

    Each token is accepted once: it is recorded in PostgreSQL before the event
    is produced (and forgotten again if producing fails, so Mailgun's retry is
    taken). A replay is answered 406, the one status Mailgun does not retry.
    """
    settings: Settings = request.app.state.settings
    key = settings.mailgun_webhook_signing_key
    if key is None:
        return _unavailable("MAILGUN_WEBHOOK_SIGNING_KEY is not set on this server")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise PayloadTooLarge("payload_too_large", "webhook bodies are limited to 1 MiB")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("invalid_json", "the body is not JSON") from None
    max_age = settings.mailgun_webhook_max_age_seconds
    try:
        token = mailgun.verify(key.get_secret_value(), payload, max_age)
    except InvalidSignature as exc:
        raise Unauthorized("invalid_signature", str(exc)) from None
    event = mailgun.to_event(payload)
    async with autocommit(request) as connection:
        await _expire_tokens(request, connection, max_age)
        if not await repository.claim_token(connection, "mailgun", token):
            body_406 = {
                "error": {"code": "replayed", "message": "token seen before", "field": None}
            }
            return JSONResponse(body_406, status_code=406)
        try:
            await asyncio.wait_for(
                request.app.state.producer.send(
                    [(TOPIC_PROVIDER_EVENTS, event.event_id, event.to_bytes())]
                ),
                settings.webhook_produce_timeout_seconds,
            )
        except Exception as exc:  # the provider retries on 5xx; nothing is lost
            log.warning("webhook %s not stored: %s", event.event_id, exc)
            await repository.release_token(connection, "mailgun", token)
            return _unavailable("the event could not be stored; retry later")
    return JSONResponse({"status": "accepted"})


async def _expire_tokens(request: Request, connection: AsyncConnection, max_age: int) -> None:
    state = request.app.state
    now = time.monotonic()
    if now - getattr(state, "webhook_tokens_expired_at", -_EXPIRE_EVERY_SECONDS) < (
        _EXPIRE_EVERY_SECONDS
    ):
        return
    state.webhook_tokens_expired_at = now
    # Twice the window: a token is refused by its timestamp long before it goes.
    before = datetime.now(UTC) - timedelta(seconds=2 * max_age)
    await repository.expire_tokens(connection, before)
