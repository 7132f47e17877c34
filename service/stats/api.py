"""Stats routes (scope ``stats:read``): one campaign's figures, and analysts' view."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response

from schemas.stats import (
    AnalystOut,
    CampaignStatsOut,
    UnmatchedEventsOut,
)
from schemas.types import PgDatetime
from service import exports
from service.auth import Principal, require
from service.campaigns import repository as campaigns
from service.errors import Forbidden
from service.http import CSV_RESPONSE, autocommit, transaction
from service.sponsors.deps import KnownSponsor
from service.stats import logic, repository

router = APIRouter(tags=["stats"])

CAMPAIGN = "/api/v1/sponsors/{sponsor_id}/campaigns/{campaign_id}"


@router.get(
    f"{CAMPAIGN}/stats",
    response_model=CampaignStatsOut,
    dependencies=[require("stats:read"), KnownSponsor],
)
async def campaign_stats(
    sponsor_id: str,
    campaign_id: uuid.UUID,
    request: Request,
    timeline: Literal["hour", "day"] | None = None,
) -> Response:
    """Counters kept by the workers (never a scan of deliveries), rates, per-link clicks,
    and with ``?timeline=hour|day`` what happened when (UTC buckets)."""
    async with autocommit(request) as connection:
        body = await logic.campaign_stats(connection, sponsor_id, campaign_id, timeline)
    if body is None:
        raise campaigns.campaign_not_found(campaign_id)
    return Response(orjson.dumps(body, default=str), media_type="application/json")


@router.get("/api/v1/stats/campaigns", response_model=AnalystOut, responses=CSV_RESPONSE)
async def analyst_campaigns(
    request: Request,
    principal: Annotated[Principal, require("stats:read")],
    sponsor_id: Annotated[str | None, Query(max_length=64)] = None,
    event_id: Annotated[str | None, Query(max_length=100)] = None,
    created_from: Annotated[PgDatetime | None, Query(alias="from")] = None,
    created_to: Annotated[PgDatetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    format: Literal["json", "csv"] = "json",
) -> AnalystOut | Response:
    """One row per campaign (newest first) with every figure and rate, plus totals.

    ``from``/``to`` bound the campaigns' creation time. Without ``sponsor_id`` a
    non-admin token sees the sponsors it is granted.
    """
    if sponsor_id is not None:
        if not principal.may_act_for(sponsor_id):
            raise Forbidden("sponsor_forbidden", "this token may not act for this sponsor")
        sponsors: list[str] | None = [sponsor_id]
    else:
        sponsors = None if principal.is_admin else sorted(principal.sponsor_ids)
    async with transaction(request) as session:
        rows = await repository.campaigns_with_figures(
            session,
            sponsor_ids=sponsors,
            event_id=event_id,
            created_from=created_from,
            created_to=created_to,
            limit=limit,
        )
    items = [logic.with_rates(row) for row in rows]
    totals = logic.totals(rows)
    if format == "csv":
        lines = [[item[c] for c in logic.ANALYST_COLUMNS] for item in items]
        total_line = ["TOTAL", "", "", "", "", "", *(totals[c] for c in logic.ANALYST_COLUMNS[6:])]
        return Response(
            exports.csv_text(logic.ANALYST_COLUMNS, [*lines, total_line]),
            media_type=exports.MEDIA_TYPE,
            headers=exports.attachment("campaign-stats.csv"),
        )
    # Already validated figures: orjson writes them directly (1,000 rows in a few ms,
    # where building response models took most of the request).
    return Response(
        orjson.dumps({"items": items, "totals": totals}, default=str), media_type="application/json"
    )


@router.get(
    "/api/v1/stats/unmatched-events",
    response_model=UnmatchedEventsOut,
    dependencies=[require("admin")],
)
async def unmatched_events(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> UnmatchedEventsOut:
    """Provider events that matched no delivery (admin): counts by provider and reason,
    and the newest ``limit`` of them. They are kept, never dropped; see docs/tracking.md."""
    async with autocommit(request) as connection:
        counts, recent = await repository.unmatched_events(connection, limit)
    return UnmatchedEventsOut.model_validate(
        {"total": sum(c["count"] for c in counts), "by_reason": counts, "recent": recent}
    )
