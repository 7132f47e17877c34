"""HTTP routes for leads."""

from __future__ import annotations

from fastapi import APIRouter, Request

from schemas.http import BulkLeadsIn, BulkLeadsOut
from service.auth import require
from service.http import transaction
from service.leads import logic, repository
from service.sponsors import repository as sponsors

router = APIRouter(prefix="/api/v1/sponsors/{sponsor_id}/leads", tags=["leads"])


@router.post("/bulk", response_model=BulkLeadsOut, dependencies=[require("leads:write")])
async def bulk_upsert(sponsor_id: str, body: BulkLeadsIn, request: Request) -> BulkLeadsOut:
    """Upsert up to 10,000 leads by email; invalid rows are reported, valid ones kept."""
    valid, rejected = logic.validate_leads(body.leads)
    async with transaction(request) as session:
        await sponsors.get(session, sponsor_id)
        inserted, updated = await repository.upsert_many(session, sponsor_id, valid)
    return BulkLeadsOut(inserted=inserted, updated=updated, rejected=rejected)
