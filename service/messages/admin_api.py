"""HTTP routes for platform-wide message types, managed by an admin (``admin`` scope).

A platform-wide type is a type without a sponsor: every sponsor may send its
key, unless the sponsor has a type of that key itself, which then wins.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from schemas.http import Page
from schemas.messages import MessageTypeIn, MessageTypeOut
from service.auth import require
from service.http import Cursor, Limit, transaction
from service.messages import repository, types
from service.messages.api import type_out, types_page

router = APIRouter(
    prefix="/api/v1/admin/message-types",
    tags=["messages"],
    dependencies=[require("admin")],
)


@router.post("", status_code=201, response_model=MessageTypeOut)
async def create_platform_type(body: MessageTypeIn, request: Request) -> MessageTypeOut:
    """A platform-wide type, validated as a sponsor's (409 if the key is taken)."""
    async with transaction(request) as session:
        row = await types.create(session, None, body)
        await session.refresh(row)
    return type_out(row)


@router.get("", response_model=Page[MessageTypeOut])
async def list_platform_types(
    request: Request, limit: Limit = 50, cursor: Cursor = None
) -> Page[MessageTypeOut]:
    return await types_page(request, None, limit, cursor)


@router.get("/{type_id}", response_model=MessageTypeOut)
async def get_platform_type(type_id: uuid.UUID, request: Request) -> MessageTypeOut:
    async with transaction(request) as session:
        row = await repository.get_type(session, None, type_id)
    return type_out(row)


@router.put("/{type_id}", response_model=MessageTypeOut)
async def replace_platform_type(
    type_id: uuid.UUID, body: MessageTypeIn, request: Request
) -> MessageTypeOut:
    """The whole type replaced; every sponsor's queued messages of it send the new content."""
    async with transaction(request) as session:
        row = await types.replace(session, None, type_id, body)
        await session.refresh(row)
    return type_out(row)


@router.delete("/{type_id}", status_code=204)
async def delete_platform_type(type_id: uuid.UUID, request: Request) -> Response:
    """The type and every sponsor's messages of it."""
    async with transaction(request) as session:
        row = await repository.get_type(session, None, type_id)
        await repository.delete_type(session, row.id)
    return Response(status_code=204)
