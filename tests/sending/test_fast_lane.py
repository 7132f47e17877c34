"""The fast lane: campaigns and one-to-one messages share the provider's rate.

Each lane's pacer is driven by heartbeats in the real database, as senders and
message-senders in separate processes would see them.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.lanes import BUSY_SECONDS, CAMPAIGNS, MESSAGES, Lane
from worker.ratelimit import Pacer

RATE = 100.0
SHARE = 0.2


@pytest.fixture
async def lanes(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[Lane, Lane]:
    async with sessions.begin() as session:
        await session.execute(text("DELETE FROM send_lanes"))
    campaigns = Lane.attach(sessions, Pacer(RATE, CAMPAIGNS), CAMPAIGNS, SHARE)
    messages = Lane.attach(sessions, Pacer(RATE, MESSAGES), MESSAGES, SHARE)
    return campaigns, messages


async def _age(sessions: async_sessionmaker[AsyncSession], lane: str) -> None:
    """The lane's last heartbeat as if it had stopped beating a while ago."""
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE send_lanes SET seen_at = now() - make_interval(secs => :s) "
                "WHERE lane = :lane"
            ),
            {"s": BUSY_SECONDS + 1, "lane": lane},
        )


async def test_campaigns_pace_at_the_rest_of_the_rate_while_messages_have_work(
    lanes: tuple[Lane, Lane],
) -> None:
    campaigns, messages = lanes
    await messages.refresh()
    await campaigns.refresh()
    assert campaigns.pacer.rate == pytest.approx(RATE * (1 - SHARE))


async def test_campaigns_borrow_the_whole_rate_back_while_messages_are_idle(
    lanes: tuple[Lane, Lane], sessions: async_sessionmaker[AsyncSession]
) -> None:
    campaigns, messages = lanes
    await messages.refresh()
    await campaigns.refresh()
    await _age(sessions, MESSAGES)
    await campaigns.refresh()
    assert campaigns.pacer.rate == pytest.approx(RATE)


async def test_messages_and_campaigns_together_never_pace_above_the_provider_rate(
    lanes: tuple[Lane, Lane],
) -> None:
    campaigns, messages = lanes
    await campaigns.refresh()
    await messages.refresh()
    await campaigns.refresh()
    assert messages.pacer.rate == pytest.approx(RATE * SHARE)
    assert campaigns.pacer.rate + messages.pacer.rate == pytest.approx(RATE)


async def test_messages_use_the_whole_rate_while_no_campaign_sends(
    lanes: tuple[Lane, Lane], sessions: async_sessionmaker[AsyncSession]
) -> None:
    campaigns, messages = lanes
    await campaigns.refresh()
    await _age(sessions, CAMPAIGNS)
    await messages.refresh()
    assert messages.pacer.rate == pytest.approx(RATE)


async def test_a_message_lane_starts_at_its_share_until_it_has_looked(
    lanes: tuple[Lane, Lane],
) -> None:
    _, messages = lanes
    assert messages.pacer.rate == pytest.approx(RATE * SHARE)


async def test_a_429_still_halves_a_lane_that_gave_up_its_share(
    lanes: tuple[Lane, Lane],
) -> None:
    campaigns, messages = lanes
    await messages.refresh()
    await campaigns.refresh()
    campaigns.pacer.throttled(0.0)
    assert campaigns.pacer.rate == pytest.approx(RATE * (1 - SHARE) / 2)


async def test_sending_beats_the_lane_at_most_once_a_second(
    lanes: tuple[Lane, Lane], sessions: async_sessionmaker[AsyncSession]
) -> None:
    campaigns, messages = lanes
    await messages.pacer.acquire()
    first = messages._beating
    assert first is not None
    await first
    for _ in range(3):
        await messages.pacer.acquire()
    assert messages._beating is first  # no second heartbeat within the second
    await campaigns.refresh()
    assert campaigns.pacer.rate == pytest.approx(RATE * (1 - SHARE))
