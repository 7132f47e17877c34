"""HTTP routes for sponsors (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from schemas.http import ID_PATTERN, SponsorIn, SponsorOut
from service.auth import require
from service.http import transaction
from service.sponsors import logic, repository
from service.sponsors.deps import CurrentSponsor

router = APIRouter(prefix="/api/v1/sponsors", tags=["sponsors"])
SponsorPath = Annotated[str, Path(pattern=ID_PATTERN)]


@router.put(
    "/{sponsor_id}",
    response_model=SponsorOut,
    dependencies=[require("admin")],
    responses={201: {"model": SponsorOut, "description": "created"}},
)
async def put_sponsor(
    sponsor_id: SponsorPath, body: SponsorIn, request: Request, response: Response
) -> SponsorOut:
    """Create or update a sponsor: 201 when created, 200 when updated."""
    logic.check_provider(body.provider, request.app.state.settings)
    async with transaction(request) as session:
        sponsor, created = await repository.upsert(session, sponsor_id, body)
    response.status_code = 201 if created else 200
    return SponsorOut.model_validate(sponsor, from_attributes=True)


@router.get("/{sponsor_id}", response_model=SponsorOut, dependencies=[require("campaigns:read")])
async def get_sponsor(sponsor: CurrentSponsor) -> SponsorOut:
    return SponsorOut.model_validate(sponsor, from_attributes=True)
