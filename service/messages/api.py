"""HTTP routes for message types and transactional messages (send, status, list)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from schemas.http import Page
from schemas.messages import (
    MessageDetailOut,
    MessageHistoryEntry,
    MessageIn,
    MessageOut,
    MessagesAccepted,
    MessagesIn,
    MessageStatus,
    MessageTypeIn,
    MessageTypeOut,
    StarterTypesIn,
)
from schemas.types import PgDatetime
from service import exports
from service.auth import Principal, current_principal, require
from service.errors import Forbidden
from service.http import (
    CSV_RESPONSE,
    Cursor,
    Limit,
    decode_cursor,
    decode_time_cursor,
    encode_cursor,
    encode_time_cursor,
    keyset_page,
    transaction,
)
from service.messages import events_repository, logic, repository, scheduling, starter, types
from service.messages import stats as message_stats
from service.models import Message, MessageType
from service.sponsors.deps import KnownSponsor

router = APIRouter(
    prefix="/api/v1/sponsors/{sponsor_id}",
    tags=["messages"],
    dependencies=[KnownSponsor],
)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def type_out(row: MessageType) -> MessageTypeOut:
    return MessageTypeOut.model_validate(row, from_attributes=True)


def _message_out(row: Message) -> MessageOut:
    return MessageOut(
        id=row.id,
        type=row.type_key,
        to=row.to_email,
        cc=row.cc,
        bcc=row.bcc,
        status=row.status,
        tags=row.tags,
        provider_message_id=row.provider_message_id,
        last_error=row.last_error,
        created_at=row.created_at,
        send_at=row.send_at,
        sent_at=row.sent_at,
        updated_at=row.updated_at,
    )


async def types_page(
    request: Request, sponsor_id: str | None, limit: int, cursor: str | None
) -> Page[MessageTypeOut]:
    """A page of a sponsor's types (None: the platform-wide ones), by key."""
    after = str(decode_cursor(cursor, 1)[0]) if cursor else None
    async with transaction(request) as session:
        rows = await repository.list_types(session, sponsor_id, limit=limit + 1, after=after)
    rows, next_cursor = keyset_page(rows, limit, lambda last: encode_cursor(last.key))
    return Page(items=[type_out(row) for row in rows], next_cursor=next_cursor)


@router.post(
    "/message-types",
    status_code=201,
    response_model=MessageTypeOut,
    dependencies=[require("campaigns:write")],
)
async def create_message_type(
    sponsor_id: str, body: MessageTypeIn, request: Request
) -> MessageTypeOut:
    """A message type; its template is validated like a template's (409 if the key is taken)."""
    async with transaction(request) as session:
        row = await types.create(session, sponsor_id, body)
        await session.refresh(row)
    return type_out(row)


@router.post(
    "/message-types/starter",
    status_code=201,
    response_model=list[MessageTypeOut],
    dependencies=[require("campaigns:write")],
)
async def install_starter_types(
    sponsor_id: str, body: StarterTypesIn, request: Request
) -> list[MessageTypeOut]:
    """Copies of the starter types as the sponsor's own (a key it has is kept as it is)."""
    async with transaction(request) as session:
        rows = await starter.install(session, sponsor_id, body.keys, body.team)
        for row in rows:
            await session.refresh(row)
    return [type_out(row) for row in rows]


@router.get(
    "/message-types",
    response_model=Page[MessageTypeOut],
    dependencies=[require("campaigns:read")],
)
async def list_message_types(
    sponsor_id: str, request: Request, limit: Limit = 50, cursor: Cursor = None
) -> Page[MessageTypeOut]:
    return await types_page(request, sponsor_id, limit, cursor)


@router.get(
    "/message-types/{type_id}",
    response_model=MessageTypeOut,
    dependencies=[require("campaigns:read")],
)
async def get_message_type(sponsor_id: str, type_id: uuid.UUID, request: Request) -> MessageTypeOut:
    async with transaction(request) as session:
        row = await repository.get_type(session, sponsor_id, type_id)
    return type_out(row)


@router.put(
    "/message-types/{type_id}",
    response_model=MessageTypeOut,
    dependencies=[require("campaigns:write")],
)
async def replace_message_type(
    sponsor_id: str, type_id: uuid.UUID, body: MessageTypeIn, request: Request
) -> MessageTypeOut:
    """The whole type replaced; queued messages send with the new content."""
    async with transaction(request) as session:
        row = await types.replace(session, sponsor_id, type_id, body)
        await session.refresh(row)
    return type_out(row)


@router.delete(
    "/message-types/{type_id}", status_code=204, dependencies=[require("campaigns:write")]
)
async def delete_message_type(sponsor_id: str, type_id: uuid.UUID, request: Request) -> Response:
    """The type and its messages (their history with it)."""
    async with transaction(request) as session:
        row = await repository.get_type(session, sponsor_id, type_id)
        await repository.delete_type(session, row.id)
    return Response(status_code=204)


@router.post(
    "/messages",
    status_code=202,
    response_model=MessagesAccepted,
    dependencies=[require("campaigns:write")],
)
async def send_messages(
    sponsor_id: str,
    request: Request,
    body: Annotated[MessagesIn | MessageIn, Body()],
    idempotency_key: IdempotencyKey = None,
) -> MessagesAccepted:
    """Queue up to 100 messages; 202 with their ids once they are durable.

    With an ``Idempotency-Key`` (kept 24 hours), the same request again gets the
    same ids and sends nothing twice; another body with the key is a 409.
    """
    messages = body.messages if isinstance(body, MessagesIn) else [body]
    async with transaction(request) as session:
        ids = await logic.queue(
            session, request.app.state.settings, sponsor_id, messages, idempotency_key
        )
    return MessagesAccepted(ids=ids)


@router.get("/messages", response_model=Page[MessageOut], responses=CSV_RESPONSE)
async def list_messages(
    sponsor_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    limit: Limit = 50,
    cursor: Cursor = None,
    type: Annotated[str | None, Query(max_length=200)] = None,
    to: Annotated[str | None, Query(max_length=320)] = None,
    status: MessageStatus | None = None,
    since: PgDatetime | None = None,
    until: PgDatetime | None = None,
    format: Literal["json", "csv"] = "json",
) -> Page[MessageOut] | StreamingResponse:
    """Newest first, filtered by type key, recipient, status and creation time
    (``since`` included, ``until`` excluded); with ``?format=csv`` every message the
    filters select, streamed (``campaigns:read`` or ``stats:read``)."""
    scopes = ("campaigns:read", "stats:read") if format == "csv" else ("campaigns:read",)
    if not any(principal.has_scope(s) for s in scopes):
        raise Forbidden("insufficient_scope", f"this route needs the '{scopes[0]}' scope")
    where = repository.MessageFilter(
        type=type, to=to.lower() if to else None, status=status, since=since, until=until
    )
    if format == "csv":
        return StreamingResponse(
            message_stats.messages_csv(request.app.state.engine, sponsor_id, where),
            media_type=exports.MEDIA_TYPE,
            headers=exports.attachment(f"messages-{sponsor_id}.csv"),
        )
    after = decode_time_cursor(cursor)
    async with transaction(request) as session:
        rows = await repository.list_messages(
            session, sponsor_id, where, limit=limit + 1, after=after
        )
    rows, next_cursor = keyset_page(rows, limit, encode_time_cursor)
    return Page(items=[_message_out(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/messages/{message_id}",
    response_model=MessageDetailOut,
    dependencies=[require("campaigns:read")],
)
async def get_message(sponsor_id: str, message_id: uuid.UUID, request: Request) -> MessageDetailOut:
    """The message, and its ``history`` (queued, sent or not, then each event)."""
    async with transaction(request) as session:
        row = await repository.get_message(session, sponsor_id, message_id)
        events = await events_repository.event_rows(session, row.id)
    history = [MessageHistoryEntry(**entry) for entry in message_stats.history(row, events)]
    return MessageDetailOut(**_message_out(row).model_dump(), history=history)


@router.delete(
    "/messages/{message_id}",
    response_model=MessageOut,
    dependencies=[require("campaigns:write")],
)
async def cancel_message(sponsor_id: str, message_id: uuid.UUID, request: Request) -> MessageOut:
    """A scheduled message cancelled before its time; 409 once it is no longer scheduled."""
    async with transaction(request) as session:
        row = await scheduling.cancel(session, sponsor_id, message_id)
    return _message_out(row)
