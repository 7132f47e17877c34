"""HTTP routes for suppressions: per sponsor (``…/sponsors/{id}/suppressions``) and
global (``/api/v1/suppressions``, admin only). Lists export as CSV with
``?format=csv`` or ``Accept: text/csv``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from schemas.http import Page, SuppressionIn, SuppressionOut
from service import exports
from service.auth import require
from service.errors import NotFound
from service.http import CSV_RESPONSE, Cursor, Limit, decode_id_cursor, encode_cursor, transaction
from service.sponsors.deps import KnownSponsor
from service.suppressions import logic, repository

router = APIRouter(tags=["suppressions"])
_SPONSOR = "/api/v1/sponsors/{sponsor_id}/suppressions"
_GLOBAL = "/api/v1/suppressions"
Format = Annotated[Literal["json", "csv"] | None, Query(alias="format")]


def _wants_csv(request: Request, format_: str | None) -> bool:
    if format_ is not None:
        return format_ == "csv"
    return "text/csv" in request.headers.get("accept", "")


async def _list(
    request: Request, sponsor_id: str | None, limit: int, cursor: str | None, format_: str | None
) -> Response | Page[SuppressionOut]:
    if _wants_csv(request, format_):
        return StreamingResponse(
            logic.csv_export(request.app.state.sessions, sponsor_id),
            media_type=exports.MEDIA_TYPE,
            headers=exports.attachment("suppressions.csv"),
        )
    after_id = decode_id_cursor(cursor)
    async with transaction(request) as session:
        rows = await repository.list_page(session, sponsor_id, limit=limit + 1, after_id=after_id)
    items = [SuppressionOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return Page[SuppressionOut](items=items, next_cursor=next_cursor)


async def _add(
    request: Request, response: Response, sponsor_id: str | None, body: SuppressionIn
) -> SuppressionOut:
    email = logic.address(body.email)
    async with transaction(request) as session:
        row, created = await repository.add(session, sponsor_id, email, body.reason, body.source)
        out = SuppressionOut.model_validate(row, from_attributes=True)
    response.status_code = 201 if created else 200
    return out


async def _remove(request: Request, sponsor_id: str | None, email: str) -> Response:
    async with transaction(request) as session:
        removed = await repository.remove(session, sponsor_id, logic.address(email))
    if not removed:
        raise NotFound("suppression_not_found", "this address is not suppressed here", "email")
    return Response(status_code=204)


@router.get(
    _SPONSOR,
    response_model=Page[SuppressionOut],
    responses=CSV_RESPONSE,
    dependencies=[require("campaigns:read"), KnownSponsor],
)
async def list_suppressions(
    sponsor_id: str,
    request: Request,
    limit: Limit = 100,
    cursor: Cursor = None,
    format_: Format = None,
) -> Response | Page[SuppressionOut]:
    """The sponsor's suppressed addresses (global ones are listed at /api/v1/suppressions)."""
    return await _list(request, sponsor_id, limit, cursor, format_)


@router.post(
    _SPONSOR,
    response_model=SuppressionOut,
    dependencies=[require("leads:write"), KnownSponsor],
    status_code=201,
)
async def add_suppression(
    sponsor_id: str, body: SuppressionIn, request: Request, response: Response
) -> SuppressionOut:
    """Suppress an address for this sponsor: 201 when new, 200 when it already was."""
    return await _add(request, response, sponsor_id, body)


@router.delete(
    f"{_SPONSOR}/{{email}}", status_code=204, dependencies=[require("leads:write"), KnownSponsor]
)
async def remove_suppression(sponsor_id: str, email: str, request: Request) -> Response:
    return await _remove(request, sponsor_id, email)


@router.get(
    _GLOBAL,
    response_model=Page[SuppressionOut],
    responses=CSV_RESPONSE,
    dependencies=[require("admin")],
)
async def list_global_suppressions(
    request: Request, limit: Limit = 100, cursor: Cursor = None, format_: Format = None
) -> Response | Page[SuppressionOut]:
    """Addresses suppressed for every sponsor (admin)."""
    return await _list(request, None, limit, cursor, format_)


@router.post(
    _GLOBAL, response_model=SuppressionOut, dependencies=[require("admin")], status_code=201
)
async def add_global_suppression(
    body: SuppressionIn, request: Request, response: Response
) -> SuppressionOut:
    return await _add(request, response, None, body)


@router.delete(f"{_GLOBAL}/{{email}}", status_code=204, dependencies=[require("admin")])
async def remove_global_suppression(email: str, request: Request) -> Response:
    return await _remove(request, None, email)
