"""What a provider without idempotency keys accepted, per batch, in this process.

SMTP servers, Mailgun and SendGrid take no idempotency key, so a batch that is
retried (the sender's back-off loop, or a parked batch that comes back to the
same process) must send only what did not go out the first time. The most
recent batches are remembered here; a batch retried by another process, or
after a crash, may send some messages twice (the docs say so).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

# About a window of batches per campaign, for every campaign in flight.
REMEMBERED_BATCHES = 4096


@dataclass(slots=True)
class AcceptedBatch:
    """What the provider accepted of one batch: delivery id → message id.

    Hold ``lock`` while sending it: the same batch twice at once (a rebalance,
    a replay) then runs one copy at a time, and the second sends only what the
    first did not.
    """

    accepted: dict[int, str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class AcceptedBatches:
    """The most recently used ``AcceptedBatch`` of each idempotency key."""

    def __init__(self, size: int = REMEMBERED_BATCHES) -> None:
        self._size = size
        self._batches: OrderedDict[str, AcceptedBatch] = OrderedDict()

    def of(self, idempotency_key: str) -> AcceptedBatch:
        batch = self._batches.get(idempotency_key)
        if batch is None:
            batch = self._batches[idempotency_key] = AcceptedBatch()
        self._batches.move_to_end(idempotency_key)
        while len(self._batches) > self._size:
            self._batches.popitem(last=False)
        return batch
