"""HTTP routes for leads: bulk JSON upsert, CSV import, list, get, delete."""

from __future__ import annotations

import tempfile
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from schemas.http import BulkLeadsIn, BulkLeadsOut, IntentLevel, LeadOut, LeadsImportOut, Page
from service.auth import require
from service.errors import UnsupportedMediaType
from service.http import Cursor, LeadIdPath, decode_id_cursor, encode_cursor, transaction
from service.leads import logic, repository
from service.leads.csv_import import import_csv
from service.sponsors.deps import KnownSponsor

router = APIRouter(
    prefix="/api/v1/sponsors/{sponsor_id}/leads", tags=["leads"], dependencies=[KnownSponsor]
)

_SPOOL_BYTES = 8 * 2**20


@router.post("/bulk", response_model=BulkLeadsOut, dependencies=[require("leads:write")])
async def bulk_upsert(sponsor_id: str, body: BulkLeadsIn, request: Request) -> BulkLeadsOut:
    """Upsert up to 10,000 leads by email; invalid rows are reported, valid ones kept."""
    valid, rejected = logic.validate_leads(body.leads)
    async with transaction(request) as session:
        inserted, updated = await repository.upsert_many(session, sponsor_id, valid)
    return BulkLeadsOut(inserted=inserted, updated=updated, rejected=rejected)


@router.post(
    "/import",
    response_model=LeadsImportOut,
    dependencies=[require("leads:write")],
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_leads(sponsor_id: str, request: Request) -> LeadsImportOut:
    """Import a CSV file (header row; lead fields as columns, others to attributes).

    The body is streamed to a temporary file, then upserted in chunks in one
    transaction; rejected rows come back with their line number.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("text/csv", "application/csv"):
        raise UnsupportedMediaType(
            "unsupported_media_type", "send the file as 'Content-Type: text/csv'", None
        )
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        # The body limits middleware stops the stream at LEADS_IMPORT_MAX_BYTES.
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        async with transaction(request) as session:
            return await import_csv(session, sponsor_id, spool)


@router.get("", response_model=Page[LeadOut], dependencies=[require("campaigns:read")])
async def list_leads(
    sponsor_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
    intent_level: IntentLevel | None = None,
    follow_up_status: Annotated[str | None, Query(max_length=40)] = None,
    event_id: Annotated[str | None, Query(max_length=64)] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
) -> Page[LeadOut]:
    """The sponsor's leads in creation order; filters are exact matches."""
    after_id = decode_id_cursor(cursor)
    filters = {
        name: value
        for name, value in {
            "intent_level": intent_level,
            "follow_up_status": follow_up_status,
            "event_id": event_id,
            "tag": tag,
            "email": email.strip().lower() if email else None,
        }.items()
        if value is not None
    }
    async with transaction(request) as session:
        rows = await repository.list_page(
            session, sponsor_id, limit=limit + 1, after_id=after_id, filters=filters
        )
    items = [LeadOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return Page[LeadOut](items=items, next_cursor=next_cursor)


@router.get("/{lead_id}", response_model=LeadOut, dependencies=[require("campaigns:read")])
async def get_lead(sponsor_id: str, lead_id: LeadIdPath, request: Request) -> LeadOut:
    async with transaction(request) as session:
        lead = await repository.get(session, sponsor_id, lead_id)
    return LeadOut.model_validate(lead, from_attributes=True)


@router.delete("/{lead_id}", status_code=204, dependencies=[require("leads:write")])
async def delete_lead(sponsor_id: str, lead_id: LeadIdPath, request: Request) -> Response:
    """Delete a lead: it leaves every future audience and its pending sends are cancelled."""
    async with transaction(request) as session:
        await repository.delete(session, sponsor_id, lead_id)
    return Response(status_code=204)
