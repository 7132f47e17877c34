"""Suppression rules: how an address is compared, and what the export holds."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import exports
from service.errors import BadRequest
from service.leads.logic import normalize_email
from service.suppressions import repository

CSV_COLUMNS = ("email", "reason", "source", "created_at", "scope")


def address(email: str) -> str:
    """The address as suppressions store it (as leads do), or a 400 on ``email``."""
    try:
        return normalize_email(email)
    except ValueError as exc:
        raise BadRequest("invalid_email", str(exc), "email") from None


def csv_export(
    sessions: async_sessionmaker[AsyncSession], sponsor_id: str | None
) -> AsyncIterator[bytes]:
    """Every suppression of the scope (a sponsor's, or the global ones) as CSV bytes."""
    return exports.csv_stream(CSV_COLUMNS, _rows(sessions, sponsor_id))


async def _rows(
    sessions: async_sessionmaker[AsyncSession], sponsor_id: str | None
) -> AsyncIterator[list[tuple[object, ...]]]:
    async with sessions() as session:
        async for rows in repository.stream_all(session, sponsor_id):
            yield [
                (
                    row.email,
                    row.reason,
                    row.source,
                    row.created_at,
                    "global" if row.sponsor_id is None else "sponsor",
                )
                for row in rows
            ]
