"""The appointments role: hands ``appointments.v1`` events to ``service.appointments.logic``.

A polled batch is applied in one transaction of one unit of work, which
publishes the emails' ``messages.v1`` rows once it commits; see
``docs/appointments.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.appointments import AppointmentEvent
from service import outbox
from service.appointments import logic
from service.appointments.outgoing import Config
from service.kafka import Producer


class Appointments:
    """Handles ``appointments.v1``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        config: Config,
    ) -> None:
        self.sessions = sessions
        self.producer = producer
        self.config = config

    async def handle(self, events: Sequence[AppointmentEvent]) -> None:
        async with (
            outbox.unit_of_work(self.sessions, self.producer) as work,
            work.transaction() as session,
        ):
            for event in events:
                await logic.handle(session, event, self.config)
