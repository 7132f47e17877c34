"""The fast lane: one-to-one messages keep a share of the provider's rate.

Campaign senders and message-senders are separate processes, each pacing
itself (``worker.ratelimit.Pacer``). While a lane has work it refreshes its
heartbeat row (``send_lanes``) at most once a second, and in the same round
trip reads whether the other lane beat in the last ``BUSY_SECONDS``:

- campaigns pace at ``1 - MESSAGES_RATE_SHARE`` of the rate while messages are
  busy, at the whole rate while they are idle (they borrow the share back);
- messages pace at ``MESSAGES_RATE_SHARE`` while campaigns are busy, at the
  whole rate while none sends.

So the two lanes together stay within the provider's rate, except for the
second or so after a lane wakes, before the other has read its heartbeat; the
provider's 429 and the pacers' AIMD cover that. The heartbeat runs beside the
send that triggered it, never in its way; a failed one keeps the last state.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.lanes import repository
from worker.ratelimit import Pacer

log = logging.getLogger(__name__)

CAMPAIGNS = "campaigns"
MESSAGES = "messages"
# A lane that beats once a second is busy while its last beat is this recent.
BUSY_SECONDS = 2.5
BEAT_SECONDS = 1.0


class Lane:
    """Keeps one pacer at its lane's part of the rate; attach with ``Lane.attach``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pacer: Pacer,
        name: str,
        messages_share: float,
    ) -> None:
        self.sessions = sessions
        self.pacer = pacer
        self.name = name
        self.other = MESSAGES if name == CAMPAIGNS else CAMPAIGNS
        self.messages_share = messages_share
        self._next_beat = 0.0
        self._beating: asyncio.Task[None] | None = None

    @classmethod
    def attach(
        cls,
        sessions: async_sessionmaker[AsyncSession],
        pacer: Pacer,
        name: str,
        messages_share: float,
    ) -> Lane:
        """A lane whose heartbeat runs as its pacer is used, with the pacer at its start rate."""
        lane = cls(sessions, pacer, name, messages_share)
        # A message lane starts at its share: campaigns may be sending before it knows.
        pacer.set_lane(lane.fraction(other_busy=name == MESSAGES))
        pacer.on_acquire = lane.beat
        return lane

    def fraction(self, *, other_busy: bool) -> float:
        """The part of the provider's rate this lane may use."""
        if not other_busy:
            return 1.0
        return self.messages_share if self.name == MESSAGES else 1.0 - self.messages_share

    def beat(self) -> None:
        """This lane has work: refresh its heartbeat if the last is a second old."""
        now = time.monotonic()
        if now < self._next_beat:
            return
        self._next_beat = now + BEAT_SECONDS
        self._beating = asyncio.get_running_loop().create_task(self.refresh())

    async def refresh(self) -> None:
        """Beat now and pace by what the other lane is doing."""
        try:
            async with self.sessions.begin() as session:
                other_busy = await repository.beat(session, self.name, self.other, BUSY_SECONDS)
        except Exception as exc:
            log.warning("%s lane: heartbeat failed, pacing as before: %s", self.name, exc)
            return
        self.pacer.set_lane(self.fraction(other_busy=other_busy))
