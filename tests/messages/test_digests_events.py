"""Replies and conversions in the digest: kept by the ``trigger`` role, listed for their period.

The events go through ``service.digests.events.keep``, the function the trigger
role calls in each polled batch's transaction, on the real database; their
recorded time is then moved into the test's period, since the service stamps it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import TOPIC_CONVERSATIONS, TOPIC_LEADS, TOPIC_ORDERS
from service.digests import events
from service.triggers.logic import Incoming
from tests.messages.test_digests import PERIOD_START, digests_to, due_timer, fire, subscribe


def incoming(topic: str, event_id: str, sponsor: str, type_: str, **data: Any) -> Incoming:
    return Incoming(topic, event_id, sponsor, {"event_id": event_id, "type": type_, "data": data})


async def keep(
    sessions: async_sessionmaker[AsyncSession], batch: list[Incoming], hours_in: float = 3
) -> int:
    """Keep a batch as the trigger role does, recorded ``hours_in`` into the period."""
    async with sessions.begin() as session:
        added = await events.keep(session, batch)
        await session.execute(
            text("UPDATE digest_events SET recorded_at = :at WHERE event_id = ANY(:ids)"),
            {"at": PERIOD_START + timedelta(hours=hours_in), "ids": [e.event_id for e in batch]},
        )
    return added


def test_a_reply_is_a_conversation_replied_or_ended_and_a_conversion_a_paid_order() -> None:
    assert events.kind_of(TOPIC_CONVERSATIONS, {"type": "conversation.replied"}) == "reply"
    assert events.kind_of(TOPIC_CONVERSATIONS, {"type": "conversation.ended"}) == "reply"
    assert events.kind_of(TOPIC_CONVERSATIONS, {"type": "conversation.started"}) is None
    paid = {"type": "order.updated", "data": {"status": "paid"}}
    assert events.kind_of(TOPIC_ORDERS, paid) == "conversion"
    assert events.kind_of(TOPIC_ORDERS, {"type": "order.paid"}) == "conversion"
    assert events.kind_of(TOPIC_ORDERS, {"type": "order.created", "data": {}}) is None
    assert events.kind_of(TOPIC_LEADS, paid) is None


async def test_a_day_with_an_order_paid_and_a_reply_lists_both_in_the_digest(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    batch = [
        incoming(
            TOPIC_ORDERS, "o-1", sponsor, "order.updated", status="paid",
            order_number="A-17", total="120.00", currency="EUR",
            customer={"email": "Ada@Customer.example"},
        ),
        incoming(
            TOPIC_CONVERSATIONS, "c-1", sponsor, "conversation.replied",
            email="grace@customer.example", customer_name="Grace Hopper",
            outcome="asked for a demo",
        ),
        # Neither a reply nor a conversion: not kept, not listed.
        incoming(TOPIC_ORDERS, "o-2", sponsor, "order.created", status="pending"),
        incoming(TOPIC_CONVERSATIONS, "c-2", sponsor, "conversation.started"),
    ]  # fmt: skip
    assert await keep(sessions, batch) == 2
    await fire(sessions, due_timer(subscription, sponsor))

    (digest,) = await digests_to(sessions, sponsor, subscription["email"])
    data = digest.data
    assert [(c["who"], c["what"]) for c in data["conversions"]] == [
        ("ada@customer.example", "order A-17 paid, 120.00 EUR")
    ]
    assert [(r["who"], r["email"], r["what"]) for r in data["replies"]] == [
        ("Grace Hopper", "grace@customer.example", "asked for a demo")
    ]
    assert data["conversions"][0]["when"].startswith("Wednesday 31 March 2027, 11:00")


async def test_an_event_replayed_twice_is_kept_once(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    paid = incoming(TOPIC_ORDERS, "o-replayed", sponsor, "order.paid", total=5)
    assert await keep(sessions, [paid, paid]) == 1
    assert await keep(sessions, [paid]) == 0  # the batch redelivered after a restart
    async with sessions() as session:
        kept = await session.scalar(
            text("SELECT count(*) FROM digest_events WHERE event_id = 'o-replayed'")
        )
    assert kept == 1


async def test_replies_outside_the_period_are_not_news_and_an_empty_period_sends_nothing(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    before = incoming(TOPIC_CONVERSATIONS, "c-old", sponsor, "conversation.ended")
    await keep(sessions, [before], hours_in=-1)
    other = incoming(TOPIC_ORDERS, "o-other", f"{sponsor}-other", "order.paid")
    await keep(sessions, [other])
    await fire(sessions, due_timer(subscription, sponsor))
    assert await digests_to(sessions, sponsor, subscription["email"]) == []
