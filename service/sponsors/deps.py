"""The sponsor a route acts for, as a FastAPI dependency.

Every route under ``/api/v1/sponsors/{sponsor_id}`` depends on
``current_sponsor`` (routers declare it once): a token that may not act for
the sponsor is a 403 before anything is read, and a sponsor that does not
exist is the same 404 on every route, whatever the route would have read.
The lookup runs on its own autocommit connection (one statement, no
BEGIN/ROLLBACK); a route that changes the sponsor's rows still opens its own
unit of work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.auth import Principal, current_principal
from service.errors import Forbidden
from service.http import lookup
from service.models import Sponsor
from service.sponsors import repository


async def current_sponsor(
    sponsor_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
) -> Sponsor:
    """The path's sponsor: 403 if the token may not act for it, 404 if it does not exist."""
    if not principal.may_act_for(sponsor_id):
        raise Forbidden("sponsor_forbidden", "this token may not act for this sponsor")
    async with lookup(request) as session:
        return await repository.get(session, sponsor_id)


CurrentSponsor = Annotated[Sponsor, Depends(current_sponsor)]
# For routers and routes that need the check but not the row.
KnownSponsor = Depends(current_sponsor)
