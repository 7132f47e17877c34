"""The two hot public routes, served as raw ASGI before FastAPI's routing.

``GET|HEAD /o/{token}``: always a 43-byte transparent GIF with
``Cache-Control: no-store``; a genuine token also emits an ``open`` event.
``GET|HEAD /c/{token}``: a 302 to the campaign's own stored URL for that link
position, or a plain 404 page; nothing taken from the request is ever a
redirect target.

Neither waits on PostgreSQL for the answer of a known link: the click target
comes from an in-process LRU (delivery → campaign, campaign → links). A miss
reads the database once (one primary-key lookup joined to the campaign's
links) and the answer is cached; links of a campaign never change once it is
sent. Events go to ``tracking-events.v1`` through ``Emitter`` (never awaited).
FastAPI's per-request machinery (its ``__call__``, Starlette's middleware
stack, dependency solving, validation) costs more than these handlers, so
``TrackingFastPath`` sits in front of the whole application (see
``service.app.CampaignService``), not inside its middleware stack.

A transactional message's tokens are tried only after a delivery's failed
(they are longer, so that check ends at their length): campaign hits pay nothing
for them. Its click targets are the ``links`` its row kept when it was sent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import TOPIC_TRACKING_EVENTS
from service import metrics
from service.settings import Settings
from service.tracking.emitter import Emitter
from service.tracking.machine import classify
from service.tracking.tokens import Kind, TokenSigner

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The smallest transparent GIF: 1×1, one transparent colour (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
assert len(PIXEL) == 43

_NO_STORE = (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0")
_PIXEL_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"image/gif"),
        (b"content-length", b"43"),
        _NO_STORE,
        (b"pragma", b"no-cache"),
        (b"expires", b"0"),
    ],
}
_NOT_FOUND_BODY = (
    b"<!doctype html><title>Link not found</title>"
    b"<p>This link is not valid. Please check the address.</p>"
)
_NOT_FOUND_START: Message = {
    "type": "http.response.start",
    "status": 404,
    "headers": [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(_NOT_FOUND_BODY)).encode()),
        _NO_STORE,
    ],
}


class _LRU:
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._size:
            self._data.popitem(last=False)


_LINKS_OF_DELIVERY = text("""
SELECT d.campaign_id,
       coalesce(json_object_agg(l.position, l.url) FILTER (WHERE l.position IS NOT NULL), '{}')
FROM campaign_deliveries d
LEFT JOIN campaign_links l ON l.campaign_id = d.campaign_id
WHERE d.id = :delivery_id
GROUP BY d.campaign_id
""")


class LinkCache:
    """Click targets by (delivery, position); bounded; one DB read per miss."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._campaign_of = _LRU(settings.tracking_delivery_cache_size)
        self._links_of = _LRU(settings.tracking_link_cache_size)
        self.misses = 0

    async def url(self, delivery_id: int, position: int) -> str | None:
        campaign_id = self._campaign_of.get(delivery_id)
        links = self._links_of.get(campaign_id) if campaign_id is not None else None
        if links is None:
            self.misses += 1
            async with self._engine.connect() as connection:
                row = (
                    await connection.execute(_LINKS_OF_DELIVERY, {"delivery_id": delivery_id})
                ).first()
            if row is None:
                return None
            campaign_id = row[0]
            raw = row[1] if isinstance(row[1], dict) else orjson.loads(row[1])
            links = {int(k): str(v) for k, v in raw.items()}
            self._campaign_of.put(delivery_id, campaign_id)
            if links:  # a campaign whose links are not written yet is asked again
                self._links_of.put(campaign_id, links)
        url: str | None = links.get(position)
        return url


_LINKS_OF_MESSAGE = text("SELECT links FROM messages WHERE id = :message_id")


class MessageLinkCache:
    """Click targets of transactional messages, by message; one DB read per miss.

    A message's links are written once, when it is sent, and never change.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._links_of = _LRU(settings.tracking_delivery_cache_size)

    async def url(self, message_id: uuid.UUID, position: int) -> str | None:
        links = self._links_of.get(message_id)
        if links is None:
            async with self._engine.connect() as connection:
                raw = await connection.scalar(_LINKS_OF_MESSAGE, {"message_id": message_id})
            if raw is None:
                return None
            links = [str(url) for url in (raw if isinstance(raw, list) else orjson.loads(raw))]
            if links:  # not sent yet: asked again
                self._links_of.put(message_id, links)
        return links[position] if position < len(links) else None


class TrackingHub:
    """What the hot routes share in one process: signer, emitter, link cache."""

    def __init__(self, settings: Settings, engine: AsyncEngine, emitter: Emitter) -> None:
        self.settings = settings
        self.signer: TokenSigner = settings.tracking_signer()
        self.emitter = emitter
        self.links = LinkCache(engine, settings)
        self.message_links = MessageLinkCache(engine, settings)
        secret = settings.ip_hash_secret or settings.tracking_secret
        assert secret is not None
        self._ip_key = hashlib.sha256(b"ip-hash:" + secret.get_secret_value().encode()).digest()
        self._hops = settings.tracking_trusted_proxy_hops
        # Label lookups take a lock and build a key on every hit: look each kind up once.
        self._hits: dict[str, Counter] = {}

    def ip_hash(self, address: str | None) -> str | None:
        if not address:
            return None
        return hmac.new(self._ip_key, address.encode(), hashlib.sha256).hexdigest()[:32]

    def client_address(self, scope: Scope, forwarded: bytes | None) -> str | None:
        if self._hops and forwarded:
            parts = [p.strip() for p in forwarded.decode("latin-1").split(",")]
            if len(parts) >= self._hops:
                return parts[-self._hops]
        client = scope.get("client")
        return str(client[0]) if client else None

    def emit(
        self,
        kind: str,
        scope: Scope,
        delivery_id: int,
        position: int,
        message_id: uuid.UUID | None = None,
    ) -> None:
        hits = self._hits.get(kind)
        if hits is None:
            hits = self._hits[kind] = metrics.TRACKING_HITS.labels(kind)
        agent = b""
        forwarded = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value
            elif name == b"x-forwarded-for":
                forwarded = value
        address = self.client_address(scope, forwarded)
        event = {
            "type": kind,
            "event_id": os.urandom(12).hex(),
            "delivery_id": delivery_id,
            "position": position,
            "occurred_at": datetime.now(UTC),
            "machine": classify(scope["method"], agent.decode("latin-1"), address),
            "ip_hash": self.ip_hash(address),
        }
        key = str(delivery_id)
        if message_id is not None:
            event["message_id"] = key = str(message_id)
        self.emitter.emit(TOPIC_TRACKING_EVENTS, key, orjson.dumps(event))
        hits.inc()


class TrackingFastPath:
    """ASGI front: serves ``/o/…`` and ``/c/…`` itself, passes everything else to ``app``.

    ``state`` is the application's state, whose ``tracking`` hub the lifespan sets.
    """

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path: str = scope["path"]
            if path.startswith("/o/"):
                await self._pixel(scope, send, path[3:])
                return
            if path.startswith("/c/"):
                await self._click(scope, send, path[3:])
                return
        await self.app(scope, receive, send)

    def _hub(self) -> TrackingHub:
        hub: TrackingHub = self._state.tracking
        return hub

    async def _pixel(self, scope: Scope, send: Send, token: str) -> None:
        try:
            hub = self._hub()
            claims = hub.signer.verify(token, Kind.OPEN)
            if claims is not None:
                hub.emit("open", scope, claims.delivery_id, 0)
            elif (message := hub.signer.unseal_message(token, Kind.MESSAGE_OPEN)) is not None:
                hub.emit("open", scope, 0, 0, message[0])
        except Exception:  # the image is always served, whatever went wrong
            log.exception("pixel: event not recorded")
        await send(_PIXEL_START)
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else PIXEL}
        )

    async def _click(self, scope: Scope, send: Send, token: str) -> None:
        url = None
        try:
            hub = self._hub()
            claims = hub.signer.verify(token, Kind.CLICK)
            if claims is not None:
                url = await hub.links.url(claims.delivery_id, claims.position)
                if url is not None:
                    hub.emit("click", scope, claims.delivery_id, claims.position)
            elif (message := hub.signer.unseal_message(token, Kind.MESSAGE_CLICK)) is not None:
                message_id, position = message
                url = await hub.message_links.url(message_id, position)
                if url is not None:
                    hub.emit("click", scope, 0, position, message_id)
        except Exception:
            log.exception("click: lookup failed")
            url = None
        if url is None:
            await send(_NOT_FOUND_START)
            body = b"" if scope["method"] == "HEAD" else _NOT_FOUND_BODY
            await send({"type": "http.response.body", "body": body})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [
                    (b"location", url.encode()),
                    (b"content-length", b"0"),
                    _NO_STORE,
                    (b"referrer-policy", b"no-referrer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
