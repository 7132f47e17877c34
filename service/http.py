"""Small helpers every API module shares: the transaction, cursors, error handlers."""

from __future__ import annotations

import base64
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Protocol, TypeVar

import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from starlette.exceptions import HTTPException

from schemas.types import BIGINT_MAX, INT_MAX, PgDatetime
from service import outbox
from service.errors import BadRequest, ClientError, TooManyRequests, Unprocessable

# OpenAPI for routes that answer ``?format=csv`` with a CSV body instead of JSON.
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}

# A pagination cursor as a query parameter: opaque, and bounded like every string.
Cursor = Annotated[str | None, Query(max_length=1000)]
# A page's size, as a query parameter.
Limit = Annotated[int, Query(ge=1, le=500)]

# Path and query numbers bounded like the columns they are compared with (bigint ids,
# int versions): past them the driver fails the query, a 500 instead of a 422.
LeadIdPath = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
VersionPath = Annotated[int, Path(ge=1, le=INT_MAX)]
LeadIdQuery = Annotated[int | None, Query(ge=1, le=BIGINT_MAX)]

_TIME = TypeAdapter(PgDatetime)
_INVALID_CURSOR = ("invalid_cursor", "the cursor is not one this API gave", "cursor")

# deadlock_detected, serialization_failure: the transaction was rolled back whole.
_WRITE_CONFLICTS = ("40P01", "40001")

log = logging.getLogger(__name__)

_Row = TypeVar("_Row")


@asynccontextmanager
async def transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commits on success, then publishes the outbox rows
    it wrote, before the answer is sent; on an error it rolls back and publishes nothing."""
    state = request.app.state
    async with (
        outbox.unit_of_work(state.sessions, state.producer) as work,
        work.transaction() as session,
    ):
        yield session


@asynccontextmanager
async def autocommit(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection whose statements each commit alone: no BEGIN/COMMIT round trips."""
    async with request.app.state.engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")


@asynccontextmanager
async def lookup(request: Request) -> AsyncIterator[AsyncSession]:
    """An ORM session on an autocommit connection, for the reads a dependency does
    before the route's unit of work: each statement commits alone (no BEGIN/ROLLBACK)."""
    async with (
        autocommit(request) as connection,
        AsyncSession(bind=connection, expire_on_commit=False) as session,
    ):
        yield session


def _retry_soon(status: int, code: str, message: str) -> JSONResponse:
    body = {"error": {"code": code, "message": f"{message}; retry", "field": None}}
    return JSONResponse(body, status_code=status, headers={"retry-after": "1"})


def encode_cursor(*values: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[object]:
    """Parse an opaque cursor; a tampered one is a 400 on the ``cursor`` field."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise BadRequest(*_INVALID_CURSOR) from None
    if not isinstance(values, list) or len(values) != arity:
        raise BadRequest(*_INVALID_CURSOR)
    return values


def keyset_page(
    rows: Sequence[_Row], limit: int, cursor_of: Callable[[_Row], str]
) -> tuple[list[_Row], str | None]:
    """The page out of ``limit + 1`` rows fetched, and the cursor of its last row when
    the extra one shows a next page (None on the last page)."""
    if len(rows) <= limit:
        return list(rows), None
    page = list(rows[:limit])
    return page, cursor_of(page[-1])


def decode_id_cursor(cursor: str | None) -> int | None:
    """The row id a keyset page starts after (None for the first page).

    400 when the cursor is not one this API encoded; 422 when it holds a value
    PostgreSQL cannot store (the caller changed it).
    """
    if not cursor:
        return None
    (value,) = decode_cursor(cursor, 1)
    # A bool is an int to Python; an id past bigint would fail in the driver.
    if type(value) is not int or not 0 <= value <= BIGINT_MAX:
        raise Unprocessable(*_INVALID_CURSOR)
    return value


def decode_uuid_cursor(cursor: str | None) -> uuid.UUID | None:
    """The row id (a UUID) a keyset page starts after (None for the first page); 400
    when the cursor is not one this API encoded."""
    if not cursor:
        return None
    try:
        return uuid.UUID(str(decode_cursor(cursor, 1)[0]))
    except ValueError:
        raise BadRequest(*_INVALID_CURSOR) from None


class _Timed(Protocol):
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> uuid.UUID: ...


def encode_time_cursor(row: _Timed) -> str:
    """The cursor of a page ordered newest first on (created_at, id), to its last row."""
    return encode_cursor(row.created_at.isoformat(), str(row.id))


def decode_time_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The (created_at, id) a keyset page starts after; 400 if undecodable, 422 if out of range."""
    if not cursor:
        return None
    created_at, row_id = decode_cursor(cursor, 2)
    try:
        return _TIME.validate_python(str(created_at)), uuid.UUID(str(row_id))
    except (ValidationError, ValueError):
        raise Unprocessable(*_INVALID_CURSOR) from None


def _field(loc: tuple[object, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Render every client error as ``{"error": {"code", "message", "field"}}``."""

    @app.exception_handler(ClientError)
    async def client_error(_request: Request, exc: ClientError) -> JSONResponse:
        headers = None
        if isinstance(exc, TooManyRequests):
            headers = {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        body = {
            "error": {
                "code": "validation_error",
                "message": str(first.get("msg", "invalid request")),
                "field": _field(tuple(first.get("loc", ()))),
                "details": [
                    {"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg"))}
                    for e in errors[:20]
                ],
            }
        }
        return JSONResponse(body, status_code=422)

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        if getattr(exc.orig, "sqlstate", None) in _WRITE_CONFLICTS:
            # PostgreSQL rolled this request back to break a deadlock with another
            # transaction writing the same rows: nothing was kept, a retry succeeds.
            return _retry_soon(
                409, "write_conflict", "another request wrote the same rows at the same time"
            )
        if not exc.connection_invalidated:
            raise exc  # a bug, not an outage: the server error handler logs it
        # The connection died under this request (a database restart or failover);
        # the pool has dropped it and every older one, so a retry gets a fresh one.
        return _retry_soon(503, "database_unavailable", "the database connection was lost")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        field = "body" if exc.status_code == 413 else None
        body = {"error": {"code": code, "message": str(exc.detail), "field": field}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
