"""``POST /api/v1/webhooks/sendgrid``: verify (ECDSA), produce every event, then answer.

SendGrid posts a JSON array of events, signed as a whole
(``sendgrid_events``). 2xx only once the broker has acknowledged every event
of the batch; otherwise a 503, and SendGrid posts the batch again (for up to
24 hours). The ingester dedupes events by ``sg_event_id``.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from schemas.events import TOPIC_PROVIDER_EVENTS
from schemas.http import ErrorBody
from service.errors import BadRequest, InvalidSignature, PayloadTooLarge, Unauthorized
from service.settings import Settings
from service.webhooks import sendgrid_events
from service.webhooks.api import MAX_BODY

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


def _unavailable(message: str) -> JSONResponse:
    body = {"error": {"code": "temporarily_unavailable", "message": message, "field": None}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


def _key(request: Request, encoded: str) -> ec.EllipticCurvePublicKey:
    """The public key, loaded once per value of the setting."""
    state = request.app.state
    cached = getattr(state, "sendgrid_webhook_key", None)
    if cached is None or cached[0] != encoded:
        cached = (encoded, sendgrid_events.public_key(encoded))
        state.sendgrid_webhook_key = cached
    key: ec.EllipticCurvePublicKey = cached[1]
    return key


@router.post(
    "/sendgrid",
    status_code=200,
    responses={
        400: {"model": ErrorBody, "description": "the body is not a JSON array"},
        401: {"model": ErrorBody, "description": "missing, invalid or stale signature"},
        413: {"model": ErrorBody, "description": "the body is over 1 MiB"},
        503: {"description": "not stored (no public key set, or the broker is away): retry"},
    },
)
async def sendgrid_webhook(request: Request) -> JSONResponse:
    """A batch of SendGrid events: 200 once durable, 401 if unsigned, 503 if not stored."""
    settings: Settings = request.app.state.settings
    if not settings.sendgrid_webhook_public_key:
        return _unavailable("SENDGRID_WEBHOOK_PUBLIC_KEY is not set on this server")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise PayloadTooLarge("payload_too_large", "webhook bodies are limited to 1 MiB")
    try:
        key = _key(request, settings.sendgrid_webhook_public_key)
    except InvalidSignature as exc:
        log.error("SENDGRID_WEBHOOK_PUBLIC_KEY: %s", exc)
        return _unavailable("SENDGRID_WEBHOOK_PUBLIC_KEY does not load")
    try:
        sendgrid_events.verify(
            key, request.headers, body, tolerance=settings.sendgrid_webhook_tolerance_seconds
        )
    except InvalidSignature as exc:
        raise Unauthorized("invalid_signature", str(exc)) from None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("invalid_json", "the body is not JSON") from None
    if not isinstance(payload, list):
        raise BadRequest("invalid_webhook", "the body must be a JSON array of events")
    events = [e for e in map(sendgrid_events.to_event, payload) if e is not None]
    messages = [(TOPIC_PROVIDER_EVENTS, e.event_id, e.to_bytes()) for e in events]
    if messages:
        try:
            await asyncio.wait_for(
                request.app.state.producer.send(messages),
                settings.webhook_produce_timeout_seconds,
            )
        except Exception as exc:  # SendGrid retries on 5xx; nothing is lost
            log.warning("sendgrid webhook batch not stored: %s", exc)
            return _unavailable("the events could not be stored; retry later")
    return JSONResponse({"status": "accepted", "events": len(events)})
