"""Limits at the edge of the API: rate limits per sponsor.

Rate limits are fixed one-minute windows counted in PostgreSQL, so every API
replica sees the same counts (in an unlogged table: a crash forgets the current
minute, and a count costs no WAL flush). Only authenticated calls for a sponsor the token
may act for are counted (a stranger cannot spend a sponsor's quota). Creating
a campaign counts against ``API_RATE_CREATE_PER_MINUTE``, every read against
``API_RATE_READ_PER_MINUTE``; past the limit the answer is 429 with
``retry-after`` (seconds to the next window).

Body size, JSON depth, U+0000 and non-finite numbers are checked before any
route reads the body, by the middleware in ``service/limits/body.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service import metrics
from service.auth import Principal, current_principal
from service.errors import TooManyRequests
from service.http import autocommit
from service.limits import repository
from service.settings import Settings


def _bucket(request: Request) -> str | None:
    if request.method == "GET":
        return "read"
    route = request.scope.get("route")
    path = getattr(route, "path", "")
    if request.method == "POST" and path.endswith("/campaigns"):
        return "create"
    return None


async def rate_limit(
    request: Request, principal: Annotated[Principal, Depends(current_principal)]
) -> None:
    """A dependency for every sponsor-scoped route (see the module docstring)."""
    settings: Settings = request.app.state.settings
    sponsor_id = request.path_params.get("sponsor_id")
    bucket = _bucket(request)
    if (
        not settings.api_rate_limits_enabled
        or sponsor_id is None
        or bucket is None
        or not principal.may_act_for(str(sponsor_id))
    ):
        return
    limit = (
        settings.api_rate_create_per_minute
        if bucket == "create"
        else settings.api_rate_read_per_minute
    )
    async with autocommit(request) as connection:
        hits, seconds_left = await repository.hit(connection, str(sponsor_id)[:64], bucket)
    if hits > limit:
        metrics.API_RATE_LIMITED.labels(bucket).inc()
        raise TooManyRequests(
            f"more than {limit} {bucket} requests per minute for this sponsor",
            retry_after=seconds_left,
        )


RateLimited = Depends(rate_limit)
