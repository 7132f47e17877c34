"""Provider events that match no delivery: kept with their reason, counted, listed for
admins, and a bounce or complaint among them still suppresses the address."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.tracking import ProviderEvent
from service.settings import Settings
from service.tracking.ingest import ingest
from service.webhooks.logic import to_event
from tests.conftest import create_sponsor, eventually
from tests.factories import SentCampaign, sent_campaign
from tests.tracking.test_webhooks import example, post


def event(kind: str, **fields: Any) -> ProviderEvent:
    return ProviderEvent(
        type=kind,
        event_id=f"resend:{uuid.uuid4().hex}",
        provider_type=f"email.{kind}",
        occurred_at=datetime.now(UTC),
        **fields,
    )


def unmatched_count(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "campaign_provider_events_unmatched_total", {"provider": "resend", "reason": reason}
    )
    return value or 0.0


async def run(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, events: list[ProviderEvent]
) -> int:
    """Ingest ``events`` in one transaction; returns how many were new."""
    async with sessions.begin() as session:
        return (await ingest(session, settings, list(events))).inserted


async def logged(
    sessions: async_sessionmaker[AsyncSession], events: list[ProviderEvent]
) -> dict[str, tuple[int | None, str | None]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT event_id, delivery_id, payload->>'unmatched' FROM delivery_events "
                "WHERE event_id = ANY(:ids)"
            ),
            {"ids": [e.event_id for e in events]},
        )
    return {row[0]: (row[1], row[2]) for row in rows}


@pytest.fixture
async def campaign(sessions: async_sessionmaker[AsyncSession], sponsor: str) -> SentCampaign:
    return await sent_campaign(sessions, sponsor, 4)


async def test_provider_events_that_match_no_delivery_are_kept_with_their_reason(
    sessions: async_sessionmaker[AsyncSession], migrated: Settings, campaign: SentCampaign
) -> None:
    tags = campaign.tags(0)
    events = [
        event("delivered", email_id=campaign.provider_ids[0], tags={"category": "x"}),
        event("delivered", tags={**tags, "delivery_id": str(2**62)}),
        event("delivered", tags={**tags, "campaign_id": str(uuid.uuid4())}),
        event("delivered", email_id=campaign.provider_ids[1], tags=tags),
        # An open the provider saw: engagement is kept too when no delivery matches.
        event("opened", email_id="re-unknown"),
    ]
    reasons = [
        "no_delivery_tag",
        "unknown_delivery",
        "campaign_mismatch",
        "email_id_mismatch",
        "no_delivery_tag",
    ]
    before = {r: unmatched_count(r) for r in set(reasons)}
    await run(sessions, migrated, events)
    found = await logged(sessions, events)
    assert [found[e.event_id] for e in events] == [(None, r) for r in reasons]
    # At least: the ingester role of other tests may count its own meanwhile.
    assert unmatched_count("no_delivery_tag") >= before["no_delivery_tag"] + 2
    for reason in ("unknown_delivery", "campaign_mismatch", "email_id_mismatch"):
        assert unmatched_count(reason) >= before[reason] + 1
    # A replay is not a new event (only new ones are counted).
    assert await run(sessions, migrated, events) == 0


async def test_the_admin_view_counts_and_lists_unmatched_events(
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    token: Any,
    sponsor: str,
) -> None:
    url = "/api/v1/stats/unmatched-events"
    before = (await client.get(url, headers=admin)).json()
    lost = event("bounced", bounce_type="Transient", email_id="re-lost")
    await run(sessions, migrated, [lost])
    response = await client.get(url, headers=admin, params={"limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    # At least: other tests' webhooks may be ingested meanwhile.
    assert body["total"] >= before["total"] + 1
    counts = {(c["provider"], c["reason"]): c["count"] for c in body["by_reason"]}
    earlier = {(c["provider"], c["reason"]): c["count"] for c in before["by_reason"]}
    key = ("resend", "no_delivery_tag")
    assert counts[key] >= earlier.get(key, 0) + 1
    assert body["total"] == sum(counts.values())
    mine = [e for e in body["recent"] if e["event_id"] == lost.event_id]
    assert [(e["reason"], e["email_id"], e["type"]) for e in mine] == [
        ("no_delivery_tag", "re-lost", "bounced")
    ]
    forbidden = await client.get(url, headers=token(sponsor))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "insufficient_scope"


async def _sponsor_sent_to(
    sessions: async_sessionmaker[AsyncSession], sponsor_id: str, email: str, status: str
) -> None:
    """The sponsor holds ``email`` as a lead and has a delivery to it in ``status``."""
    async with sessions.begin() as session:
        lead_id = await session.scalar(
            text("INSERT INTO leads (sponsor_id, email) VALUES (:s, :e) RETURNING id"),
            {"s": sponsor_id, "e": email},
        )
        campaign_id = uuid.uuid4()
        await session.execute(
            text("""
INSERT INTO campaigns (id, sponsor_id, name, subject, message_body, audience_type, status)
VALUES (:id, :s, 'Other', 'Hello', 'Hi', 'all', 'sent')
"""),
            {"id": campaign_id, "s": sponsor_id},
        )
        await session.execute(
            text("""
INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no, status)
VALUES (:c, :l, :e, 0, :status)
"""),
            {"c": campaign_id, "l": lead_id, "e": email, "status": status},
        )


async def suppressed_for(
    sessions: async_sessionmaker[AsyncSession], email: str
) -> dict[str | None, str]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT sponsor_id, reason FROM suppressions WHERE email = :e"), {"e": email}
        )
    return {row[0]: row[1] for row in rows}


async def _sponsors(client: httpx.AsyncClient, admin: dict[str, str], n: int) -> list[str]:
    return [await create_sponsor(client, admin) for _ in range(n)]


@pytest.mark.usefixtures("workers")
async def test_an_untagged_complaint_suppresses_the_address_for_every_sponsor_that_sent_to_it(
    sessions: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    admin: dict[str, str],
) -> None:
    email = f"who-{uuid.uuid4().hex[:8]}@example.com"
    first, second, held_only = await _sponsors(client, admin, 3)
    await _sponsor_sent_to(sessions, first, email, "delivered")
    await _sponsor_sent_to(sessions, second, email, "sent")
    await _sponsor_sent_to(sessions, held_only, email, "pending")  # never sent to it
    # The spec's example: its tags name no delivery; the address is in ``to``.
    body = example("complained", to=[email.upper()])
    assert (await post(client, body)).status_code == 200

    async def both() -> dict[str | None, str] | None:
        found = await suppressed_for(sessions, email)
        return found if len(found) >= 2 else None

    assert await eventually(both) == {first: "complaint", second: "complaint"}


async def test_an_unmatched_hard_bounce_or_refusal_suppresses_and_a_transient_bounce_does_not(
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
    client: httpx.AsyncClient,
    admin: dict[str, str],
) -> None:
    hard, refused, transient = (f"{k}-{uuid.uuid4().hex[:8]}@example.com" for k in "hrt")
    (sponsor_id,) = await _sponsors(client, admin, 1)
    for email in (hard, refused, transient):
        await _sponsor_sent_to(sessions, sponsor_id, email, "sent")
    events = [
        to_event(
            "m1", {"type": "email.bounced", "data": {"to": [hard], "bounce": {"type": "Permanent"}}}
        ),
        to_event("m2", {"type": "email.suppressed", "data": {"to": [refused]}}),
        to_event(
            "m3",
            {"type": "email.bounced", "data": {"to": [transient], "bounce": {"type": "Transient"}}},
        ),
    ]
    await run(sessions, migrated, events)
    assert await suppressed_for(sessions, hard) == {sponsor_id: "hard_bounce"}
    assert await suppressed_for(sessions, refused) == {sponsor_id: "hard_bounce"}
    assert await suppressed_for(sessions, transient) == {}


def test_only_suppressing_events_carry_the_address() -> None:
    delivered = to_event("m4", {"type": "email.delivered", "data": {"to": ["a@example.com"]}})
    complained = to_event("m5", {"type": "email.complained", "data": {"to": ["A@Example.com"]}})
    assert delivered.recipients == []
    assert complained.recipients == ["a@example.com"]
