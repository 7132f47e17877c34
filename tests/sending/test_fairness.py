"""Campaigns interleave: one sponsor's huge campaign cannot starve another's small one.

The mechanism under test: the planner puts only a window of each campaign's
batches (``SEND_WINDOW_BATCHES``) on ``campaign-batches.v1`` and the sender
releases the next batch only when one finishes. A campaign that starts later
therefore queues behind at most a window of the huge campaign's batches, not
behind all of them.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests import factories
from tests.conftest import TokenFactory, eventually
from tests.fakes.resend_server import FakeResend

pytestmark = pytest.mark.usefixtures("workers")

HUGE = 20_000
SMALL = 200
# Every provider request takes this long: the huge campaign then needs
# HUGE / batch size / in-flight batches × latency ≈ 12 s on its own.
LATENCY_SECONDS = 0.5


class Sponsor:
    def __init__(self, client: httpx.AsyncClient, token: TokenFactory, name: str) -> None:
        self.client = client
        self.id = f"{name}-{uuid.uuid4().hex[:8]}"
        self.domain = f"{self.id}.example"
        self.headers = token(self.id)

    async def register(self, admin: dict[str, str]) -> None:
        response = await self.client.put(
            f"/api/v1/sponsors/{self.id}",
            headers=admin,
            json={
                "name": self.id,
                "from_email": f"news@{self.domain}",
                "postal_address": "1 Fair Street, Berlin",
            },
        )
        assert response.status_code == 201, response.text

    async def campaign(self, leads: int) -> str:
        await factories.add_leads(
            self.client, self.id, self.headers, factories.leads(leads, domain=self.domain)
        )
        response = await self.client.post(
            f"/api/v1/sponsors/{self.id}/campaigns",
            headers=self.headers,
            json=factories.campaign(),
        )
        assert response.status_code == 202, response.text
        campaign_id: str = response.json()["id"]
        return campaign_id

    async def stats(self, campaign_id: str) -> dict[str, Any]:
        response = await self.client.get(
            f"/api/v1/sponsors/{self.id}/campaigns/{campaign_id}/stats", headers=self.headers
        )
        stats: dict[str, Any] = response.json()
        return stats

    def received(self, fake: FakeResend) -> Counter[str]:
        return Counter(m.to[0] for m in fake.messages if m.to[0].endswith("@" + self.domain))


async def test_a_small_campaign_finishes_long_before_a_huge_one_started_earlier(
    client: httpx.AsyncClient,
    token: TokenFactory,
    admin: dict[str, str],
    fake: FakeResend,
    migrated: Settings,
) -> None:
    huge, small = Sponsor(client, token, "huge"), Sponsor(client, token, "small")
    await huge.register(admin)
    await small.register(admin)
    fake.set_latency(LATENCY_SECONDS)

    big = await huge.campaign(HUGE)

    async def under_way() -> dict[str, Any] | None:
        stats = await huge.stats(big)
        return stats if stats["status"] == "sending" and stats["sent"] > 0 else None

    await eventually(under_way, within=60)
    sent_before = (await huge.stats(big))["sent"]
    little = await small.campaign(SMALL)
    started = time.monotonic()

    async def small_done() -> dict[str, Any] | None:
        stats = await small.stats(little)
        return stats if stats["status"] == "sent" else None

    small_stats = await eventually(small_done, within=60, interval=0.05)
    small_seconds = time.monotonic() - started
    huge_then = await huge.stats(big)

    assert small_stats["sent"] == SMALL
    assert huge_then["status"] == "sending"
    assert huge_then["pending"] > HUGE / 2, huge_then
    # The small campaign waited for about one window of the huge one's batches
    # (the ones already in the topic), not for its 200 batches: a bound in
    # batches holds however slow the machine is.
    huge_batches_meanwhile = (huge_then["sent"] - sent_before) / migrated.provider_batch_size
    assert huge_batches_meanwhile <= 3 * migrated.send_window_batches, (
        f"the huge campaign sent {huge_batches_meanwhile:.0f} batches "
        f"in the {small_seconds:.1f}s the small one took"
    )

    # The huge campaign is not starved either: it goes on and completes, exactly once.
    fake.set_latency(0)

    async def huge_done() -> dict[str, Any] | None:
        stats = await huge.stats(big)
        return stats if stats["status"] == "sent" else None

    huge_stats = await eventually(huge_done, within=120)
    assert (huge_stats["sent"], huge_stats["pending"]) == (HUGE, 0)
    assert set(huge.received(fake).values()) == {1}
    assert len(huge.received(fake)) == HUGE
    assert set(small.received(fake).values()) == {1}
    assert len(small.received(fake)) == SMALL
