"""Every SQL statement about appointments and their built-in message types."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Appointment, MessageType, table_of


async def get_for_update(
    session: AsyncSession, sponsor_id: str, appointment_id: str
) -> Appointment | None:
    """The appointment, locked: two copies of one event wait for each other."""
    result: Appointment | None = await session.scalar(
        select(Appointment)
        .where(Appointment.sponsor_id == sponsor_id, Appointment.appointment_id == appointment_id)
        .with_for_update()
    )
    return result


async def get(session: AsyncSession, sponsor_id: str, appointment_id: str) -> Appointment | None:
    result: Appointment | None = await session.scalar(
        select(Appointment).where(
            Appointment.sponsor_id == sponsor_id, Appointment.appointment_id == appointment_id
        )
    )
    return result


async def get_many(
    session: AsyncSession, ids: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Appointment]:
    """The appointments of (sponsor id, appointment id) pairs, in one query."""
    if not ids:
        return {}
    rows = await session.scalars(
        select(Appointment).where(
            tuple_(Appointment.sponsor_id, Appointment.appointment_id).in_(list(ids))
        )
    )
    return {(row.sponsor_id, row.appointment_id): row for row in rows}


async def add(session: AsyncSession, appointment: Appointment) -> None:
    session.add(appointment)
    await session.flush()


async def sponsor_exists(session: AsyncSession, sponsor_id: str) -> bool:
    found = await session.scalar(
        text("SELECT EXISTS (SELECT 1 FROM sponsors WHERE id = :id)"), {"id": sponsor_id}
    )
    return bool(found)


async def ensure_type(
    session: AsyncSession, sponsor_id: str, values: dict[str, Any]
) -> MessageType:
    """The sponsor's type with ``values["key"]``, created from ``values`` when it has none.

    A type the sponsor already has (one they edited through the API) is kept as it is.
    """
    await session.execute(
        insert(table_of(MessageType))
        .values(id=uuid.uuid4(), sponsor_id=sponsor_id, **values)
        .on_conflict_do_nothing(index_elements=["sponsor_id", "key"])
    )
    found = await session.scalar(
        select(MessageType).where(
            MessageType.sponsor_id == sponsor_id, MessageType.key == values["key"]
        )
    )
    assert found is not None  # inserted above, or there already
    return found
