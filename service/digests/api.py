"""HTTP routes for digest subscriptions: who on the team gets the daily digest, and when."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request, Response

from schemas.digests import DigestSubscriptionIn, DigestSubscriptionOut
from schemas.http import Page
from service.auth import require
from service.digests import logic, repository
from service.http import Cursor, Limit, decode_uuid_cursor, encode_cursor, keyset_page, transaction
from service.models import DigestSubscription
from service.sponsors.deps import KnownSponsor

router = APIRouter(
    prefix="/api/v1/sponsors/{sponsor_id}/digests",
    tags=["digests"],
    dependencies=[KnownSponsor],
)


def _out(row: DigestSubscription, next_at: datetime | None) -> DigestSubscriptionOut:
    return DigestSubscriptionOut(
        id=row.id,
        email=row.email,
        time_zone=row.time_zone,
        cron=row.cron,
        next_digest_at=next_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.post(
    "",
    status_code=201,
    response_model=DigestSubscriptionOut,
    dependencies=[require("campaigns:write")],
)
async def create_subscription(
    sponsor_id: str, body: DigestSubscriptionIn, request: Request
) -> DigestSubscriptionOut:
    """A member's digest; its cron and time zone are checked (422 naming the field)."""
    async with transaction(request) as session:
        row = await logic.create(session, sponsor_id, body)
        await session.refresh(row)
        due = await logic.next_digest_at(session, [row])
    return _out(row, due.get(row.id))


@router.get(
    "", response_model=Page[DigestSubscriptionOut], dependencies=[require("campaigns:read")]
)
async def list_subscriptions(
    sponsor_id: str, request: Request, limit: Limit = 50, cursor: Cursor = None
) -> Page[DigestSubscriptionOut]:
    after = decode_uuid_cursor(cursor)
    async with transaction(request) as session:
        rows = await repository.page(session, sponsor_id, limit=limit + 1, after=after)
        rows, next_cursor = keyset_page(rows, limit, lambda last: encode_cursor(str(last.id)))
        due = await logic.next_digest_at(session, rows)
    return Page(items=[_out(row, due.get(row.id)) for row in rows], next_cursor=next_cursor)


@router.get(
    "/{subscription_id}",
    response_model=DigestSubscriptionOut,
    dependencies=[require("campaigns:read")],
)
async def get_subscription(
    sponsor_id: str, subscription_id: uuid.UUID, request: Request
) -> DigestSubscriptionOut:
    async with transaction(request) as session:
        row = await repository.get(session, sponsor_id, subscription_id)
        due = await logic.next_digest_at(session, [row])
    return _out(row, due.get(row.id))


@router.put(
    "/{subscription_id}",
    response_model=DigestSubscriptionOut,
    dependencies=[require("campaigns:write")],
)
async def replace_subscription(
    sponsor_id: str, subscription_id: uuid.UUID, body: DigestSubscriptionIn, request: Request
) -> DigestSubscriptionOut:
    """The whole subscription replaced; the next digest follows the new schedule."""
    async with transaction(request) as session:
        row = await logic.replace(session, sponsor_id, subscription_id, body)
        await session.refresh(row)
        due = await logic.next_digest_at(session, [row])
    return _out(row, due.get(row.id))


@router.delete("/{subscription_id}", status_code=204, dependencies=[require("campaigns:write")])
async def delete_subscription(
    sponsor_id: str, subscription_id: uuid.UUID, request: Request
) -> Response:
    """The subscription and its timer; digests already sent stay in the messages."""
    async with transaction(request) as session:
        await logic.delete(session, sponsor_id, subscription_id)
    return Response(status_code=204)
