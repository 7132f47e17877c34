"""Report routes (a campaign's, a message type's): a share link made with ``stats:read``,
and the public page it opens.

The page is HTML for people (printable, no JavaScript, charts drawn as SVG on
the server). It needs no bearer token: the signed, expiring link is the
permission, and names one campaign only. A bad or expired link gets a 404
page, the same for both, so a link cannot be probed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.stats import ReportLinkIn, ReportLinkOut
from service.auth import require
from service.campaigns import repository as campaigns
from service.http import autocommit
from service.messages.stats_api import type_not_found
from service.reports import links, logic, repository
from service.sponsors.deps import KnownSponsor
from service.tracking.tokens import Kind, TokenSigner

router = APIRouter(tags=["reports"])
public_router = APIRouter(tags=["public"])

# Our own template, autoescaped; never the sponsors' sandbox.
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
)
_HEADERS = {
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    # Nothing on the page is fetched: no script, no style or image from elsewhere.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
}
_NOT_FOUND = HTMLResponse(
    "<!doctype html><meta charset=utf-8><title>Report not found</title>"
    "<h1>Report not found</h1><p>This report link is not valid or has expired. "
    "Ask for a new one.</p>",
    status_code=404,
    headers=_HEADERS,
)


def _signer(request: Request) -> TokenSigner:
    signer: TokenSigner = request.app.state.tracking.signer
    return signer


def _share_link(
    request: Request, kind_path: str, report_id: uuid.UUID, body: ReportLinkIn, kind: Kind
) -> ReportLinkOut:
    """The public page ``/reports/{kind_path}/{report_id}`` with a token for it that
    expires as ``body`` asks."""
    expires_at = links.expiry(datetime.now(UTC), body.ttl_seconds)
    token = links.sign(_signer(request), report_id, expires_at, kind)
    base = request.app.state.settings.public_base_url.rstrip("/")
    return ReportLinkOut(
        url=f"{base}/reports/{kind_path}/{report_id}?token={token}", expires_at=expires_at
    )


# Each kind of report: how its page is read, and the template that shows it.
_Load = Callable[[AsyncConnection, uuid.UUID, str], Awaitable[dict[str, Any] | None]]
_REPORTS: dict[Kind, tuple[_Load, str]] = {
    Kind.REPORT: (logic.campaign_report, "campaign.html"),
    Kind.TYPE_REPORT: (logic.message_type_report, "message_type.html"),
}


async def _page(
    request: Request, report_id: str, token: str, timeline: str, kind: Kind
) -> HTMLResponse:
    """The report the token opens, or the same 404 page for a bad id, a bad or expired
    token and a report that is gone."""
    try:
        subject = uuid.UUID(report_id)
    except ValueError:
        return _NOT_FOUND
    if not links.verify(_signer(request), token, subject, datetime.now(UTC), kind):
        return _NOT_FOUND
    load, template = _REPORTS[kind]
    unit = "day" if timeline == "day" else "hour"
    async with autocommit(request) as connection:
        report = await load(connection, subject, unit)
    if report is None:
        return _NOT_FOUND
    html = _PAGES.get_template(template).render(report, token=token)
    return HTMLResponse(html, headers=_HEADERS)


@router.post(
    "/api/v1/sponsors/{sponsor_id}/campaigns/{campaign_id}/report-links",
    response_model=ReportLinkOut,
    status_code=201,
    dependencies=[require("stats:read"), KnownSponsor],
)
async def create_report_link(
    sponsor_id: str, campaign_id: uuid.UUID, body: ReportLinkIn, request: Request
) -> ReportLinkOut:
    """A link to the campaign's report page that works without a token until ``expires_at``
    (``ttl_seconds``: 7 days unless asked, 30 days at most). Anyone holding it can read
    the report: hand it to people, not to logs."""
    async with autocommit(request) as connection:
        found = await repository.campaign_header(connection, campaign_id, sponsor_id)
    if found is None:
        raise campaigns.campaign_not_found(campaign_id)
    return _share_link(request, "campaigns", campaign_id, body, Kind.REPORT)


@public_router.get(
    "/reports/campaigns/{campaign_id}",
    response_class=HTMLResponse,
    responses={404: {"description": "a bad, expired or foreign link: a plain page"}},
)
async def campaign_report_page(
    campaign_id: str,
    request: Request,
    token: Annotated[str, Query(max_length=200)] = "",
    timeline: Annotated[str, Query(max_length=10)] = "hour",
) -> HTMLResponse:
    """The campaign's report as a printable HTML page, opened by a share link's token
    (``?timeline=day`` groups the charts by day instead of by hour)."""
    return await _page(request, campaign_id, token, timeline, Kind.REPORT)


@router.post(
    "/api/v1/sponsors/{sponsor_id}/message-types/{type_id}/report-links",
    response_model=ReportLinkOut,
    status_code=201,
    dependencies=[require("stats:read"), KnownSponsor],
)
async def create_message_type_report_link(
    sponsor_id: str, type_id: uuid.UUID, body: ReportLinkIn, request: Request
) -> ReportLinkOut:
    """A link to the message type's report page, as a campaign's (``report-links``)."""
    async with autocommit(request) as connection:
        found = await repository.message_type_header(connection, type_id, sponsor_id)
    if found is None:
        raise type_not_found(type_id)
    return _share_link(request, "message-types", type_id, body, Kind.TYPE_REPORT)


@public_router.get(
    "/reports/message-types/{type_id}",
    response_class=HTMLResponse,
    responses={404: {"description": "a bad, expired or foreign link: a plain page"}},
)
async def message_type_report_page(
    type_id: str,
    request: Request,
    token: Annotated[str, Query(max_length=200)] = "",
    timeline: Annotated[str, Query(max_length=10)] = "hour",
) -> HTMLResponse:
    """The message type's report as a printable HTML page, opened by a share link."""
    return await _page(request, type_id, token, timeline, Kind.TYPE_REPORT)
