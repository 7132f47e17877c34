"""Rules for leads coming in: validation, email normalization, duplicates."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.http import LeadIn, RejectedRow
from schemas.leads import LeadDeleted, LeadUpserted
from service.leads import repository, sync_repository
from service.leads.validation import fast_email, fast_lead
from service.nul import nul_character

log = logging.getLogger(__name__)

# From this many events on, lead sync applies a batch set-based (COPY and one
# statement per kind) rather than event by event.
SYNC_BULK_MIN_EVENTS = 100


def normalize_email(address: str) -> str:
    """Syntax-check (no DNS on the hot path) and lower-case an address.

    Raises ``ValueError`` with a human message when the address is not valid.
    """
    if (normalized := fast_email(address)) is not None:
        return normalized
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.normalized.lower()


def validate_lead(raw: Mapping[str, Any]) -> dict[str, Any] | tuple[str, str, str | None]:
    """One raw row → the values to upsert, or (code, message, field) when it is rejected.

    The values keep only the fields present in the row, so an upsert changes
    what was sent and leaves the rest as stored.
    """
    if (values := fast_lead(raw)) is not None:
        return values
    return full_validation(raw)


def full_validation(raw: Mapping[str, Any]) -> dict[str, Any] | tuple[str, str, str | None]:
    """``validate_lead`` without the fast path: every rule, and the wording of a rejection."""
    if (path := nul_character(raw)) is not None:
        return "invalid_field", "NUL characters are not allowed", path
    try:
        lead = LeadIn.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or None
        return "invalid_field", error["msg"], field
    try:
        email = validate_email(lead.email, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        return "invalid_email", str(exc), "email"
    values = lead.model_dump(include=set(raw.keys()) | {"email"})
    values["email"] = email
    return values


def validate_leads(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[RejectedRow]]:
    """Split raw rows into valid leads (with the keys the caller sent) and rejections.

    The second row with an address already seen in the same upload is
    rejected, not merged.
    """
    valid: list[dict[str, Any]] = []
    rejected: list[RejectedRow] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(rows):
        if not isinstance(raw, Mapping):
            rejected.append(RejectedRow(index=index, code="invalid_row", message="not an object"))
            continue
        result = validate_lead(raw)
        if isinstance(result, tuple):
            code, message, field = result
            rejected.append(RejectedRow(index=index, code=code, message=message, field=field))
            continue
        email = result["email"]
        if email in seen:
            rejected.append(
                RejectedRow(
                    index=index,
                    code="duplicate_in_upload",
                    message=f"same address as row {seen[email]}",
                    field="email",
                )
            )
            continue
        seen[email] = index
        valid.append(result)
    return valid, rejected


def _sync_email(event: LeadUpserted | LeadDeleted) -> str | None:
    """The event's normalized address, or None (logged) when the event cannot apply."""
    try:
        email = normalize_email(event.email)
    except ValueError as exc:
        log.warning("lead sync: skipping event %s: %s", event.id, exc)
        return None
    if nul_character(event.model_dump(mode="json")) is not None:
        log.warning("lead sync: skipping event %s: NUL characters", event.id)
        return None
    return email


def _sync_values(event: LeadUpserted, email: str) -> dict[str, Any]:
    values = event.model_dump(exclude={"id", "sponsor_id", "updated_at", "type"})
    values["email"] = email
    return values


async def apply_event(session: AsyncSession, event: LeadUpserted | LeadDeleted) -> bool:
    """Apply one ``leads.v1`` event idempotently; False when it changed nothing
    (older than what is stored, a duplicate, an invalid address or an unknown sponsor)."""
    if (email := _sync_email(event)) is None:
        return False
    if isinstance(event, LeadDeleted):
        return await repository.sync_delete(session, event.sponsor_id, email, event.updated_at)
    values = _sync_values(event, email)
    return await repository.sync_upsert(session, event.sponsor_id, values, event.updated_at)


async def apply_events(session: AsyncSession, events: Sequence[LeadUpserted | LeadDeleted]) -> int:
    """Apply ``leads.v1`` events; returns how many changed something.

    A batch of ``SYNC_BULK_MIN_EVENTS`` or more is applied set-based: only the
    newest upsert and the newest deletion of each address count (the end state
    is the one the events give one by one), and the count is of leads changed.
    """
    if len(events) < SYNC_BULK_MIN_EVENTS:
        changed = 0
        for event in events:
            changed += await apply_event(session, event)
        return changed
    upserts: dict[sync_repository.Key, tuple[datetime, dict[str, Any]]] = {}
    deletions: dict[sync_repository.Key, datetime] = {}
    for event in events:
        if (email := _sync_email(event)) is None:
            continue
        key = (event.sponsor_id, email)
        if isinstance(event, LeadDeleted):
            deletions[key] = max(event.updated_at, deletions.get(key, event.updated_at))
        elif key not in upserts or event.updated_at > upserts[key][0]:
            # On equal times the first one stays, as one by one.
            upserts[key] = (event.updated_at, _sync_values(event, email))
    await sync_repository.tombstone_many(session, deletions)
    changed = await sync_repository.upsert_many(session, upserts)
    return changed + await sync_repository.delete_many(session, deletions)
