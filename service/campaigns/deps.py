"""The campaign a read route is about, as a FastAPI dependency.

Another sponsor's campaign is a 404, as if it did not exist. Routes that
change a campaign read it again inside their own unit of work (the row they
change is the row their transaction read), so this is for routes that only
read it.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from service.campaigns import repository
from service.http import lookup
from service.models import Campaign
from service.sponsors.deps import CurrentSponsor


async def current_campaign(
    campaign_id: uuid.UUID, sponsor: CurrentSponsor, request: Request
) -> Campaign:
    """The sponsor's campaign ``campaign_id``, or 404."""
    async with lookup(request) as session:
        return await repository.get(session, sponsor.id, campaign_id)


CurrentCampaign = Annotated[Campaign, Depends(current_campaign)]
