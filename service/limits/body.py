"""Request bodies bounded before they are read, and JSON checked whatever its content type.

One ASGI middleware in front of every route:

- A request that declares a ``Content-Length`` over its limit is answered 413
  without reading a byte; a chunked one is cut when the count passes it.
  ``API_MAX_BODY_MB`` bounds every body; the CSV import streams to the route
  and is bounded by ``LEADS_IMPORT_MAX_BYTES`` instead.
- On the authenticated API (sponsor, suppression and stats routes) a write
  without a valid bearer token is answered 401 before its body is read, so a
  stranger cannot make the API hold a body at all.
- Every other ``/api/`` body is parsed as JSON whatever its ``Content-Type``
  says (FastAPI reads a body as JSON under any spelling of ``json`` and with
  no content type at all, and ``json.loads`` reads UTF-16 and ``NaN`` that
  orjson refuses). What parses is checked for depth (``API_MAX_JSON_DEPTH``),
  U+0000 (which PostgreSQL cannot store) and non-finite numbers: 422 naming
  the path. What does not parse goes on to the route, which reports it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import decode_token
from service.errors import ClientError, PayloadTooLarge, Unauthorized, Unprocessable
from service.nul import nul_character
from service.settings import Settings

# Routes that check U+0000 per row and keep the valid rows of the request.
ROW_VALIDATED = ("/leads/bulk",)
# Routes that read their body as a stream, bounded by their own limit.
STREAMED = ("/leads/import",)
# Routes behind a bearer token (the public ones, webhooks included, are not).
AUTHENTICATED = ("/api/v1/sponsors/", "/api/v1/suppressions", "/api/v1/stats/")
_SAFE = ("GET", "HEAD", "OPTIONS")


class _NonFinite:
    """Stands where ``json.loads`` found ``NaN`` or ``Infinity``, so its path can be named."""

    def __init__(self, name: str) -> None:
        self.name = name


def _non_finite(value: Any) -> tuple[str, str] | None:
    """The dotted path and spelling of the first non-finite number in ``value``, or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _NonFinite):
            return path or "body", node.name
        if isinstance(node, dict | list):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((child, f"{path}.{key}" if path else str(key)) for key, child in items)
    return None


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


def json_problem(body: bytes, max_depth: int, nul_allowed: bool) -> ClientError | None:
    """Why ``body``, read as JSON by any parser, must be refused; None if it may pass."""
    too_deep_error = Unprocessable(
        "json_too_deep", f"JSON nests deeper than {max_depth} levels", "body"
    )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower() or "depth" in str(exc).lower():
            return too_deep_error
        try:
            # What orjson refuses, FastAPI's json.loads may still accept.
            parsed = json.loads(body, parse_constant=_NonFinite)
        except RecursionError:
            return too_deep_error
        except ValueError:
            return None  # not JSON: the route answers as it does for any bad body
        if (found := _non_finite(parsed)) is not None:
            return Unprocessable("non_finite_number", f"{found[1]} is not a JSON number", found[0])
    if (deep := too_deep(parsed, max_depth)) is not None:
        too_deep_error.field = deep
        return too_deep_error
    if not nul_allowed and (nul := nul_character(parsed)) is not None:
        return Unprocessable("nul_character", "U+0000 is not allowed", nul)
    return None


class BodyLimits:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.max_bytes = int(settings.api_max_body_mb * 1_048_576)
        self.max_depth = settings.api_max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        api = path.startswith("/api/")
        if api and ("\x00" in path or b"%00" in scope.get("query_string", b"")):
            await _error(send, Unprocessable("nul_character", "U+0000 is not allowed", "path"))
            return
        streamed = api and path.endswith(STREAMED)
        limit = self.settings.leads_import_max_bytes if streamed else self.max_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _error(send, self._too_big(limit, streamed))
            return
        if api and scope["method"] not in _SAFE and path.startswith(AUTHENTICATED):
            refused = self._unauthenticated(headers.get(b"authorization", b""))
            if refused is not None:
                await _error(send, refused)
                return
        if not api or streamed or scope["method"] in _SAFE:
            await self.app(scope, self._counted(receive, limit, streamed), send)
            return
        await self._buffered(scope, receive, send, path)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
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
                await _error(send, self._too_big(self.max_bytes, False))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            problem = json_problem(body, self.max_depth, path.endswith(ROW_VALIDATED))
            if problem is not None:
                await _error(send, problem)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _counted(self, receive: Receive, limit: int, streamed: bool) -> Receive:
        """``receive`` that stops the request once its body passes ``limit`` bytes."""
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > limit:
                # Raised into whatever reads the body: FastAPI passes it on as it is,
                # and the app's handler renders it as a 413 JSON error.
                raise HTTPException(413, self._too_big(limit, streamed).message)
            return message

        return counted

    def _unauthenticated(self, authorization: bytes) -> ClientError | None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Unauthorized("missing_token", "send 'Authorization: Bearer <JWT>'")
        try:
            decode_token(token.strip(), self.settings)
        except Unauthorized as exc:
            return exc
        return None

    def _too_big(self, limit: int, streamed: bool) -> ClientError:
        if streamed:
            message = f"the file is larger than {limit} bytes (LEADS_IMPORT_MAX_BYTES)"
        else:
            message = f"the body is larger than {round(limit / 1_048_576, 3):g} MB"
        return PayloadTooLarge("payload_too_large", message, "body")


async def _error(send: Send, error: ClientError) -> None:
    body = orjson.dumps(error.to_dict())
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
