"""Messages held ``weekly`` wait for the member's weekly slot: their first digest on
or after Monday 00:00 in their zone; ``daily`` ones go in every digest."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.digests import schedule
from tests.messages.test_digests import (
    BERLIN,
    DUE,
    PERIOD_START,
    digests_to,
    due_timer,
    fire,
    hold,
    subscribe,
)

# The Monday after DUE (a Thursday), 08:00 in Berlin: the weekly slot of a daily cron.
MONDAY = datetime(2027, 4, 5, 8, tzinfo=BERLIN)


def test_the_weekly_slot_is_the_first_digest_on_or_after_monday_midnight_local() -> None:
    zone = "Europe/Berlin"
    assert schedule.is_weekly_slot(zone, MONDAY - timedelta(days=1), MONDAY)
    assert not schedule.is_weekly_slot(zone, PERIOD_START, DUE)
    assert not schedule.is_weekly_slot(zone, MONDAY, MONDAY + timedelta(days=1))
    # A weekday cron: Friday 07:30 to Monday 07:30 holds the Monday midnight.
    friday = datetime(2027, 4, 2, 7, 30, tzinfo=BERLIN)
    assert schedule.is_weekly_slot(zone, friday, datetime(2027, 4, 5, 7, 30, tzinfo=BERLIN))
    # A digest firing at Monday 00:00 itself is the slot, and the one after is not.
    midnight = datetime(2027, 4, 5, tzinfo=BERLIN)
    assert schedule.is_weekly_slot(zone, midnight - timedelta(days=1), midnight)
    assert not schedule.is_weekly_slot(zone, midnight, midnight + timedelta(days=1))
    # Read in the member's zone: Monday 00:00 in New York is 06:00 in Berlin.
    new_york = datetime(2027, 4, 5, 6, tzinfo=BERLIN)
    assert not schedule.is_weekly_slot("America/New_York", midnight, new_york - timedelta(hours=1))
    assert schedule.is_weekly_slot("America/New_York", midnight, new_york)


async def add_type(
    client: httpx.AsyncClient, sponsor: str, headers: Any, key: str, cat: str
) -> str:
    created = await client.post(
        f"/api/v1/sponsors/{sponsor}/message-types",
        json={
            "key": key,
            "category": "notification",
            "preference_category": cat,
            "subject": f"{key}: {{{{ attributes.deal }}}}",
            "html_body": "<p>{{ attributes.deal }}</p>",
            "variables": [{"name": "deal", "type": "string"}],
        },
        headers=headers,
    )
    assert created.status_code == 201, created.text
    type_id: str = created.json()["id"]
    return type_id


async def test_weekly_held_messages_appear_only_in_the_weekly_slot(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    email = subscription["email"]
    alerts = await add_type(client, sponsor, token(sponsor), "deal.alert", "alerts")
    summaries = await add_type(client, sponsor, token(sponsor), "deal.summary", "summaries")
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO recipient_preferences (sponsor_id, email, category, frequency)"
                " VALUES (:s, :e, 'alerts', 'weekly'), (:s, :e, 'summaries', 'daily')"
            ),
            {"s": sponsor, "e": email},
        )
    at = PERIOD_START + timedelta(hours=2)
    await hold(sessions, sponsor, alerts, email, at, deal="Acme")
    await hold(sessions, sponsor, summaries, email, at, deal="Globex")

    await fire(sessions, due_timer(subscription, sponsor))  # Thursday: daily only
    (thursday,) = await digests_to(sessions, sponsor, email)
    assert [m["subject"] for m in thursday.data["held"]] == ["deal.summary: Globex"]

    await fire(sessions, due_timer(subscription, sponsor, MONDAY))
    monday = [d for d in await digests_to(sessions, sponsor, email) if d.id != thursday.id]
    assert [m["subject"] for m in monday[0].data["held"]] == ["deal.alert: Acme"]


async def test_a_period_with_only_weekly_held_messages_outside_the_slot_sends_nothing(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    email = subscription["email"]
    alerts = await add_type(client, sponsor, token(sponsor), "deal.alert", "alerts")
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO recipient_preferences (sponsor_id, email, category, frequency)"
                " VALUES (:s, :e, 'alerts', 'weekly')"
            ),
            {"s": sponsor, "e": email},
        )
    await hold(sessions, sponsor, alerts, email, PERIOD_START + timedelta(hours=2), deal="Acme")
    await fire(sessions, due_timer(subscription, sponsor))
    assert await digests_to(sessions, sponsor, email) == []
