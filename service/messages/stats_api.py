"""Stats routes for transactional messages (scope ``stats:read``): one type's figures,
and the analysts' view of every type."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response

from schemas.messages import AnalystMessageTypesOut, MessageTypeStatsOut
from service import exports
from service.auth import Principal, require
from service.errors import Forbidden, NotFound
from service.http import CSV_RESPONSE, autocommit, transaction
from service.messages import events_repository
from service.messages import stats as logic
from service.sponsors.deps import KnownSponsor

router = APIRouter(tags=["stats"])


def type_not_found(type_id: uuid.UUID) -> NotFound:
    return NotFound("message_type_not_found", f"no message type '{type_id}'", "type_id")


@router.get(
    "/api/v1/sponsors/{sponsor_id}/message-types/{type_id}/stats",
    response_model=MessageTypeStatsOut,
    dependencies=[require("stats:read"), KnownSponsor],
)
async def message_type_stats(
    sponsor_id: str,
    type_id: uuid.UUID,
    request: Request,
    timeline: Literal["hour", "day"] | None = None,
) -> Response:
    """Sent, delivered, bounced, complained, opened and clicked (a person's opens and
    clicks, not a proxy's or a scanner's), rates, clicks per link, and with
    ``?timeline=hour|day`` what happened when (UTC buckets)."""
    async with autocommit(request) as connection:
        body = await logic.type_stats(connection, sponsor_id, type_id, timeline)
    if body is None:
        raise type_not_found(type_id)
    return Response(orjson.dumps(body, default=str), media_type="application/json")


@router.get(
    "/api/v1/stats/message-types", response_model=AnalystMessageTypesOut, responses=CSV_RESPONSE
)
async def analyst_message_types(
    request: Request,
    principal: Annotated[Principal, require("stats:read")],
    sponsor_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """One row per message type (by sponsor and key) with every figure and rate, plus
    totals, as ``/api/v1/stats/campaigns`` for campaigns. Without ``sponsor_id`` a
    non-admin token sees the sponsors it is granted."""
    if sponsor_id is not None:
        if not principal.may_act_for(sponsor_id):
            raise Forbidden("sponsor_forbidden", "this token may not act for this sponsor")
        sponsors: list[str] | None = [sponsor_id]
    else:
        sponsors = None if principal.is_admin else sorted(principal.sponsor_ids)
    async with transaction(request) as session:
        rows = await events_repository.types_with_figures(session, sponsors, limit)
    items, totals = logic.analyst_rows(rows)
    if format == "csv":
        lines = [[item[c] for c in logic.ANALYST_COLUMNS] for item in items]
        total_line = ["TOTAL", "", "", "", *(totals[c] for c in logic.ANALYST_COLUMNS[4:])]
        return Response(
            exports.csv_text(logic.ANALYST_COLUMNS, [*lines, total_line]),
            media_type=exports.MEDIA_TYPE,
            headers=exports.attachment("message-type-stats.csv"),
        )
    return Response(
        orjson.dumps({"items": items, "totals": totals}, default=str), media_type="application/json"
    )
