"""HTTP routes of the sponsor dashboard: one recipient's preferences, read and changed."""

from __future__ import annotations

from fastapi import APIRouter, Request

from schemas.preferences import PreferencesIn, PreferencesOut
from service.auth import require
from service.http import transaction
from service.preferences import logic
from service.sponsors.deps import KnownSponsor
from service.suppressions.logic import address

router = APIRouter(
    prefix="/api/v1/sponsors/{sponsor_id}/preferences",
    tags=["preferences"],
    dependencies=[KnownSponsor],
)


@router.get("/{email}", response_model=PreferencesOut, dependencies=[require("campaigns:read")])
async def get_preferences(sponsor_id: str, email: str, request: Request) -> PreferencesOut:
    """Every category as it applies (defaults where the recipient chose nothing)."""
    async with transaction(request) as session:
        return await logic.current(session, sponsor_id, address(email))


@router.put("/{email}", response_model=PreferencesOut, dependencies=[require("leads:write")])
async def put_preferences(
    sponsor_id: str, email: str, body: PreferencesIn, request: Request
) -> PreferencesOut:
    """A partial change: categories and fields left out keep their value; the next
    message follows it."""
    async with transaction(request) as session:
        return await logic.update(session, sponsor_id, address(email), body)
