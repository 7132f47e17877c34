"""Global pacing of provider requests, shared by every sender.

The provider allows ``PROVIDER_RATE_PER_SECOND`` requests for the whole
deployment. Each sender takes its share: the fraction of the batch topic's
partitions assigned to it, recomputed on every rebalance, times its lane's
part of the rate (``worker.lanes``: campaigns give up ``MESSAGES_RATE_SHARE``
while one-to-one messages have work). On a 429 every send
waits for the provider's ``retry-after`` and the rate is halved
(multiplicative decrease); each second without a 429 gives back a tenth of
the full rate (additive increase).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from service import metrics

MIN_FACTOR = 0.05
INCREASE_PER_SECOND = 0.1


class Pacer:
    """A leaky bucket of capacity one at ``global rate × share × lane × AIMD factor``."""

    def __init__(
        self, global_rate: float, lane: str = "campaigns", *, reported: bool = True
    ) -> None:
        self.global_rate = global_rate
        self.share = 1.0
        self.lane = 1.0
        self.factor = 1.0
        # Pacers of a sponsor's own provider accounts: they take the same share and lane.
        self.followers: list[Pacer] = []
        # Only the deployment's pacer sets the pacing gauge.
        self._reported = reported
        # Called before each acquire: a lane's heartbeat, which throttles itself.
        self.on_acquire: Callable[[], None] | None = None
        self._gauge = metrics.PACING_RATE.labels(lane)
        self._resume_at = 0.0
        self._last_increase = time.monotonic()
        # Capacity 1: no bursts, so any window sees at most rate × seconds + 1 requests.
        self._limiter = AsyncLimiter(1, 1 / self.rate)
        if reported:
            self._gauge.set(self.rate)

    @property
    def rate(self) -> float:
        """Requests per second this sender may make now."""
        return max(self.global_rate * self.share * self.lane * self.factor, 0.001)

    def _apply(self) -> None:
        # aiolimiter has no setter; these two fields are its whole rate state.
        self._limiter.time_period = 1 / self.rate
        self._limiter._rate_per_sec = self.rate
        if self._reported:
            self._gauge.set(self.rate)

    def set_share(self, assigned: int, total: int) -> None:
        """This sender owns ``assigned`` of the topic's ``total`` partitions."""
        self.share = assigned / total if total else 1.0
        self._apply()
        for follower in self.followers:
            follower.follow(self)

    def follow(self, leader: Pacer) -> None:
        """Take ``leader``'s share and lane (a sponsor's account beside the default)."""
        self.share, self.lane = leader.share, leader.lane
        self._apply()

    def set_lane(self, fraction: float) -> None:
        """This sender's lane may use ``fraction`` of the provider's rate now."""
        if fraction != self.lane:
            self.lane = fraction
            self._apply()
            for follower in self.followers:
                follower.follow(self)

    async def acquire(self) -> None:
        if self.on_acquire is not None:
            self.on_acquire()
        # A loop, not an event: another 429 may push the resume time while we sleep.
        while (wait := self._resume_at - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        await self._limiter.acquire()

    def throttled(self, retry_after: float | None) -> None:
        """The provider said 429: wait as told and halve the rate."""
        now = time.monotonic()
        self._resume_at = max(self._resume_at, now + (retry_after or 1.0))
        self.factor = max(self.factor / 2, MIN_FACTOR)
        self._last_increase = now
        self._apply()

    def succeeded(self) -> None:
        now = time.monotonic()
        if self.factor < 1.0 and now - self._last_increase >= 1.0:
            self.factor = min(1.0, self.factor + INCREASE_PER_SECOND)
            self._last_increase = now
            self._apply()
