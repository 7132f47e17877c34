"""HTTP routes for audiences: the dashboard's live recipient count."""

from __future__ import annotations

from fastapi import APIRouter, Request

from schemas.http import AudiencePreviewIn, AudiencePreviewOut, LeadOut
from service.audiences import repository
from service.auth import require
from service.http import transaction
from service.settings import Settings
from service.sponsors.deps import KnownSponsor

router = APIRouter(
    prefix="/api/v1/sponsors/{sponsor_id}/audiences",
    tags=["audiences"],
    dependencies=[KnownSponsor],
)


@router.post(
    "/preview", response_model=AudiencePreviewOut, dependencies=[require("campaigns:read")]
)
async def preview(sponsor_id: str, body: AudiencePreviewIn, request: Request) -> AudiencePreviewOut:
    """How many leads a campaign with this audience would reach now, and up to 10 of them."""
    settings: Settings = request.app.state.settings
    async with transaction(request) as session:
        answer = await repository.preview(
            session,
            sponsor_id,
            body.audience_type,
            body.audience_filter,
            settings.audience_preview_exact_ms,
        )
    return AudiencePreviewOut(
        count=answer.count,
        exact=answer.exact,
        error_bound=answer.error_bound,
        confidence=answer.confidence,
        sample=[LeadOut.model_validate(lead, from_attributes=True) for lead in answer.sample],
    )
