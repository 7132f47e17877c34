"""Test data: leads and campaign bodies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.providers.base import OutgoingEmail


def leads(count: int, *, domain: str = "example.com", **fields: Any) -> list[dict[str, Any]]:
    """``count`` distinct leads; every third one has no name (to exercise fallbacks)."""
    return [
        {
            "email": f"lead{i}@{domain}",
            "name": None if i % 3 == 0 else f"Lead {i}",
            "company": f"Company {i % 7}",
            "intent_level": ("hot", "warm", "cold")[i % 3],
            "intent_score": i % 101,
            "tags": ["test"],
            **fields,
        }
        for i in range(count)
    ]


def campaign(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Launch",
        "subject": "Hello {{ name }}",
        "message_body": "Hi {{ name }},\n\nwelcome from {{ company | default('us') }}.",
        "audience_type": "all",
    }
    body.update(overrides)
    return body


def outgoing(i: int, campaign_id: str, **overrides: Any) -> OutgoingEmail:
    """The ``i``-th email of a batch as the sender hands it to a provider."""
    fields: dict[str, Any] = {
        "delivery_id": 1000 + i,
        "campaign_id": campaign_id,
        "sender": "News Desk <news@sponsor.example>",
        "to": f"reader{i}@example.org",
        "subject": f"Hello {i}",
        "html": f"<p>Hello reader {i}</p>",
        "text": f"Hello reader {i}",
    }
    fields.update(overrides)
    return OutgoingEmail(**fields)


async def draft(client: httpx.AsyncClient, sponsor: str, headers: dict[str, str]) -> dict[str, Any]:
    """A draft campaign of the sponsor's, as the API answers it."""
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=campaign(draft=True)
    )
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


async def add_leads(
    client: httpx.AsyncClient, sponsor: str, headers: dict[str, str], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    for start in range(0, len(rows), 10_000):
        response = await client.post(
            f"/api/v1/sponsors/{sponsor}/leads/bulk",
            headers=headers,
            json={"leads": rows[start : start + 10_000]},
        )
        assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@dataclass(frozen=True)
class SentCampaign:
    """A campaign whose messages went out: delivery ids, provider ids, links by position."""

    id: uuid.UUID
    sponsor_id: str
    delivery_ids: list[int]
    provider_ids: list[str]
    emails: list[str]
    links: dict[int, str]

    def tags(self, i: int) -> dict[str, str]:
        """The tags recipient ``i``'s message carried, which Resend echoes in its webhooks."""
        return {"campaign_id": str(self.id), "delivery_id": str(self.delivery_ids[i])}


async def sent_campaign(
    sessions: async_sessionmaker[AsyncSession],
    sponsor_id: str,
    recipients: int = 10,
    *,
    links: dict[int, str] | None = None,
    status: str = "sent",
    tracking_enabled: bool = True,
    sent_seconds_ago: float = 3600,
    event_id: str | None = None,
) -> SentCampaign:
    """Rows as the planner and sender leave them: one ``sent`` delivery per recipient,
    with provider message ids, and the campaign's tracked links."""
    links = (
        {0: "https://sponsor.example/offer?a=1", 1: "https://sponsor.example/b"}
        if links is None
        else links
    )
    campaign_id = uuid.uuid4()
    emails = [f"r{i}-{campaign_id.hex[:6]}@example.com" for i in range(recipients)]
    provider_ids = [f"re-{campaign_id.hex[:12]}-{i}" for i in range(recipients)]
    async with sessions.begin() as session:
        await session.execute(
            text("""
INSERT INTO campaigns (id, sponsor_id, name, subject, message_body, audience_type, status,
                       tracking_enabled, total_recipients, event_id)
VALUES (:id, :sponsor, 'Factory', 'Hello', 'Hi', 'all', :status, :tracking, :n, :event_id)
"""),
            {
                "id": campaign_id,
                "sponsor": sponsor_id,
                "status": status,
                "tracking": tracking_enabled,
                "n": recipients,
                "event_id": event_id,
            },
        )
        result = await session.execute(
            text("""
INSERT INTO campaign_deliveries
    (campaign_id, lead_id, recipient_email, batch_no, status, provider_message_id, sent_at)
SELECT :id, n, e, n / 100, 'sent', p, now() - make_interval(secs => :ago)
FROM unnest(CAST(:emails AS text[]), CAST(:pids AS text[])) WITH ORDINALITY AS v(e, p, n)
ORDER BY n
RETURNING lead_id, id
"""),
            {"id": campaign_id, "emails": emails, "pids": provider_ids, "ago": sent_seconds_ago},
        )
        ids = [int(row[1]) for row in sorted(result.all())]
        await session.execute(
            text("""
INSERT INTO campaign_stats (campaign_id, shard, sent)
SELECT :id, (n / 100) % 16, count(*) FROM generate_series(1, :n) n GROUP BY 2
"""),
            {"id": campaign_id, "n": recipients},
        )
        for position, url in links.items():
            await session.execute(
                text("INSERT INTO campaign_links (campaign_id, position, url) VALUES (:c, :p, :u)"),
                {"c": campaign_id, "p": position, "u": url},
            )
    return SentCampaign(campaign_id, sponsor_id, ids, provider_ids, emails, links)


async def delivery(sessions: async_sessionmaker[AsyncSession], delivery_id: int) -> dict[str, Any]:
    """A delivery row as a dict."""
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT * FROM campaign_deliveries WHERE id = :id"), {"id": delivery_id}
            )
        ).one()
    return dict(row._mapping)
