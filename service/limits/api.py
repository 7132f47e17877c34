"""Limits at the edge of the API: rate limits per sponsor, body size, JSON depth.

Rate limits are fixed one-minute windows counted in PostgreSQL, so every API
replica sees the same counts (in an unlogged table: a crash forgets the current
minute, and a count costs no WAL flush). Only authenticated calls for a sponsor the token
may act for are counted (a stranger cannot spend a sponsor's quota). Creating
a campaign counts against ``API_RATE_CREATE_PER_MINUTE``, every read against
``API_RATE_READ_PER_MINUTE``; past the limit the answer is 429 with
``retry-after`` (seconds to the next window).

Body size (``API_MAX_BODY_MB``, 413), JSON depth (``API_MAX_JSON_DEPTH``,
422 naming the path where it got too deep) and U+0000 characters (which
PostgreSQL cannot store: 422 naming the field) are checked by an ASGI
middleware before any parsing by the routes.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.auth import Principal, current_principal
from service.errors import TooManyRequests
from service.http import autocommit
from service.limits import repository
from service.nul import nul_character
from service.settings import Settings


def _bucket(request: Request) -> str | None:
    if request.method == "GET":
        return "read"
    route = request.scope.get("route")
    path = getattr(route, "path", "")
    if request.method == "POST" and path.endswith("/campaigns"):
        return "create"
    return None


async def rate_limit(
    request: Request, principal: Annotated[Principal, Depends(current_principal)]
) -> None:
    """A dependency for every sponsor-scoped route (see the module docstring)."""
    settings: Settings = request.app.state.settings
    sponsor_id = request.path_params.get("sponsor_id")
    bucket = _bucket(request)
    if (
        not settings.api_rate_limits_enabled
        or sponsor_id is None
        or bucket is None
        or not principal.may_act_for(str(sponsor_id))
    ):
        return
    limit = (
        settings.api_rate_create_per_minute
        if bucket == "create"
        else settings.api_rate_read_per_minute
    )
    async with autocommit(request) as connection:
        hits, seconds_left = await repository.hit(connection, str(sponsor_id)[:64], bucket)
    if hits > limit:
        metrics.API_RATE_LIMITED.labels(bucket).inc()
        raise TooManyRequests(
            f"more than {limit} {bucket} requests per minute for this sponsor",
            retry_after=seconds_left,
        )


RateLimited = Depends(rate_limit)


def too_deep(value: Any, limit: int) -> str | None:
    """The dotted path where ``value`` nests deeper than ``limit``, or None."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return path or "body"
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, f"{path}.{key}" if path else str(key)))
    return None


# Routes that check U+0000 per row and keep the valid rows of the request.
ROW_VALIDATED = ("/leads/bulk",)


class BodyLimits:
    """ASGI middleware: 413 past ``max_bytes``; 422 for JSON nested deeper than ``max_depth``.

    A ``text/csv`` body streams through untouched (the import route bounds it).
    Only ``/api/`` routes: the recipients' pages (``/u/…``, ``/v/…``) answer
    anything odd with their own plain 404 page, never a JSON error.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            await self._error(send, 422, "nul_character", "U+0000 is not allowed", "path")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if headers.get(b"content-type", b"").startswith(b"text/csv"):
            # CSV imports stream to the route, which applies LEADS_IMPORT_MAX_BYTES.
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._error(send, 413, "payload_too_large", self._too_big())
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._error(send, 413, "payload_too_large", self._too_big())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"")
        # FastAPI reads a body without a content type as JSON too.
        if body and (not content_type or b"json" in content_type):
            path = None
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                parsed = None  # the route's own parsing reports it, as a 422
                if "depth" in str(exc):
                    path = "body"
            if parsed is not None:
                path = too_deep(parsed, self.max_depth)
            if path is not None:
                message_text = f"JSON nests deeper than {self.max_depth} levels"
                await self._error(send, 422, "json_too_deep", message_text, path)
                return
            if (
                parsed is not None
                and not scope["path"].endswith(ROW_VALIDATED)
                and (path := nul_character(parsed)) is not None
            ):
                await self._error(send, 422, "nul_character", "U+0000 is not allowed", path)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_big(self) -> str:
        return f"the body is larger than {round(self.max_bytes / 1_048_576, 3):g} MB"

    async def _error(
        self, send: Send, status: int, code: str, message: str, field: str = "body"
    ) -> None:
        body = orjson.dumps({"error": {"code": code, "message": message, "field": field}})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
