"""HTTP routes for the templates library, and the public "view in browser" page."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from schemas.http import Page
from schemas.templates import (
    TemplateContentIn,
    TemplateIn,
    TemplateOut,
    TemplatePatch,
    TemplateVersionOut,
)
from service.auth import require
from service.http import (
    Cursor,
    Limit,
    VersionPath,
    decode_time_cursor,
    encode_time_cursor,
    keyset_page,
    transaction,
)
from service.models import Template, TemplateVersion
from service.sponsors.deps import KnownSponsor
from service.templates import logic, repository

router = APIRouter(
    prefix="/api/v1/sponsors/{sponsor_id}/templates",
    tags=["templates"],
    dependencies=[KnownSponsor],
)
public_router = APIRouter(tags=["public"])


def _version_out(version: TemplateVersion) -> TemplateVersionOut:
    return TemplateVersionOut.model_validate(version, from_attributes=True)


def _out(template: Template, latest: TemplateVersion | None = None) -> TemplateOut:
    out = TemplateOut.model_validate(template, from_attributes=True)
    out.latest = _version_out(latest) if latest is not None else None
    return out


@router.post(
    "", status_code=201, response_model=TemplateOut, dependencies=[require("campaigns:write")]
)
async def create_template(sponsor_id: str, body: TemplateIn, request: Request) -> TemplateOut:
    """A template and its version 1; the content is validated like a campaign's."""
    async with transaction(request) as session:
        template, version = await logic.create(session, sponsor_id, body)
        await session.refresh(template)
        await session.refresh(version)
    return _out(template, version)


@router.get("", response_model=Page[TemplateOut], dependencies=[require("campaigns:read")])
async def list_templates(
    sponsor_id: str,
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
    category: Annotated[str | None, Query(max_length=60)] = None,
) -> Page[TemplateOut]:
    after = decode_time_cursor(cursor)
    async with transaction(request) as session:
        rows = await repository.list_page(
            session, sponsor_id, limit=limit + 1, category=category, after=after
        )
    rows, next_cursor = keyset_page(rows, limit, encode_time_cursor)
    return Page(items=[_out(t) for t in rows], next_cursor=next_cursor)


@router.get("/{template_id}", response_model=TemplateOut, dependencies=[require("campaigns:read")])
async def get_template(sponsor_id: str, template_id: uuid.UUID, request: Request) -> TemplateOut:
    """The template with its latest version."""
    async with transaction(request) as session:
        template = await repository.get(session, sponsor_id, template_id)
        latest = await repository.get_version(session, template.id, template.latest_version)
    return _out(template, latest)


@router.patch(
    "/{template_id}", response_model=TemplateOut, dependencies=[require("campaigns:write")]
)
async def update_template(
    sponsor_id: str, template_id: uuid.UUID, body: TemplatePatch, request: Request
) -> TemplateOut:
    """Rename or re-categorize; content changes are new versions."""
    async with transaction(request) as session:
        template = await repository.get(session, sponsor_id, template_id)
        logic.rename(template, body)
        await session.flush()
        await session.refresh(template)
        latest = await repository.get_version(session, template.id, template.latest_version)
    return _out(template, latest)


@router.delete("/{template_id}", status_code=204, dependencies=[require("campaigns:write")])
async def delete_template(sponsor_id: str, template_id: uuid.UUID, request: Request) -> Response:
    """Campaigns created from it keep their own copy of the content."""
    async with transaction(request) as session:
        template = await repository.get(session, sponsor_id, template_id)
        await repository.delete_template(session, template.id)
    return Response(status_code=204)


@router.post(
    "/{template_id}/versions",
    status_code=201,
    response_model=TemplateVersionOut,
    dependencies=[require("campaigns:write")],
)
async def add_version(
    sponsor_id: str, template_id: uuid.UUID, body: TemplateContentIn, request: Request
) -> TemplateVersionOut:
    """A new immutable version, which becomes the latest."""
    async with transaction(request) as session:
        version = await logic.add_version(session, sponsor_id, template_id, body)
        await session.refresh(version)
    return _version_out(version)


@router.get(
    "/{template_id}/versions",
    response_model=list[TemplateVersionOut],
    dependencies=[require("campaigns:read")],
)
async def list_versions(
    sponsor_id: str, template_id: uuid.UUID, request: Request
) -> list[TemplateVersionOut]:
    async with transaction(request) as session:
        template = await repository.get(session, sponsor_id, template_id)
        versions = await repository.list_versions(session, template.id)
    return [_version_out(v) for v in versions]


@router.get(
    "/{template_id}/versions/{version}",
    response_model=TemplateVersionOut,
    dependencies=[require("campaigns:read")],
)
async def get_version(
    sponsor_id: str, template_id: uuid.UUID, version: VersionPath, request: Request
) -> TemplateVersionOut:
    async with transaction(request) as session:
        template = await repository.get(session, sponsor_id, template_id)
        row = await repository.get_version(session, template.id, version)
    return _version_out(row)


_NOT_FOUND_PAGE = (
    "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Not found</title></head>"
    "<body><p>This message is no longer available.</p></body></html>"
)


@public_router.get(
    "/v/{token}",
    response_class=HTMLResponse,
    responses={404: {"description": "an unknown or forged token: a plain page"}},
)
async def view_in_browser(token: str, request: Request) -> HTMLResponse:
    """The message a delivery got, rendered again; a bad token is a 404 page."""
    state = request.app.state
    html = await logic.view_in_browser(state.sessions, state.settings, token)
    if html is None:
        return HTMLResponse(_NOT_FOUND_PAGE, status_code=404)
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"})
