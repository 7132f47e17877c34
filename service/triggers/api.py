"""HTTP routes for trigger rules: CRUD, and the starter set installed with one call."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from schemas.http import Page
from schemas.triggers import StarterIn, TriggerRuleIn, TriggerRuleOut
from service.auth import require
from service.http import Cursor, Limit, decode_uuid_cursor, encode_cursor, keyset_page, transaction
from service.models import TriggerRule
from service.sponsors.deps import KnownSponsor
from service.triggers import logic, repository, starter

router = APIRouter(
    prefix="/api/v1/sponsors/{sponsor_id}/triggers",
    tags=["triggers"],
    dependencies=[KnownSponsor],
)


def _out(row: TriggerRule) -> TriggerRuleOut:
    return TriggerRuleOut.model_validate(row, from_attributes=True)


@router.post(
    "", status_code=201, response_model=TriggerRuleOut, dependencies=[require("campaigns:write")]
)
async def create_rule(sponsor_id: str, body: TriggerRuleIn, request: Request) -> TriggerRuleOut:
    """A rule; its condition and actions are checked whole (422 naming the field)."""
    async with transaction(request) as session:
        row = await logic.create(session, sponsor_id, body)
        await session.refresh(row)
    return _out(row)


@router.post(
    "/starter",
    status_code=201,
    response_model=list[TriggerRuleOut],
    dependencies=[require("campaigns:write")],
)
async def install_starter(
    sponsor_id: str, body: StarterIn, request: Request
) -> list[TriggerRuleOut]:
    """The qualified-lead alert and thank-you types and their rule (kept if present)."""
    async with transaction(request) as session:
        rows = await starter.install(session, sponsor_id, body)
        for row in rows:
            await session.refresh(row)
    return [_out(row) for row in rows]


@router.get("", response_model=Page[TriggerRuleOut], dependencies=[require("campaigns:read")])
async def list_rules(
    sponsor_id: str, request: Request, limit: Limit = 50, cursor: Cursor = None
) -> Page[TriggerRuleOut]:
    after = decode_uuid_cursor(cursor)
    async with transaction(request) as session:
        rows = await repository.list_rules(session, sponsor_id, limit=limit + 1, after=after)
    rows, next_cursor = keyset_page(rows, limit, lambda last: encode_cursor(str(last.id)))
    return Page(items=[_out(row) for row in rows], next_cursor=next_cursor)


@router.get("/{rule_id}", response_model=TriggerRuleOut, dependencies=[require("campaigns:read")])
async def get_rule(sponsor_id: str, rule_id: uuid.UUID, request: Request) -> TriggerRuleOut:
    async with transaction(request) as session:
        row = await repository.get_rule(session, sponsor_id, rule_id)
    return _out(row)


@router.put("/{rule_id}", response_model=TriggerRuleOut, dependencies=[require("campaigns:write")])
async def replace_rule(
    sponsor_id: str, rule_id: uuid.UUID, body: TriggerRuleIn, request: Request
) -> TriggerRuleOut:
    """The whole rule replaced; events already handled stay handled."""
    async with transaction(request) as session:
        row = await logic.replace(session, sponsor_id, rule_id, body)
        await session.refresh(row)
    return _out(row)


@router.delete("/{rule_id}", status_code=204, dependencies=[require("campaigns:write")])
async def delete_rule(sponsor_id: str, rule_id: uuid.UUID, request: Request) -> Response:
    async with transaction(request) as session:
        row = await repository.get_rule(session, sponsor_id, rule_id)
        await repository.delete_rule(session, row.id)
    return Response(status_code=204)
