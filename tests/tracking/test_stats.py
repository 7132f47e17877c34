"""Stats routes: figures, rates, links, timeline, the CSV export and the analysts' view."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.tracking import ProviderEvent, TrackingEvent
from service import exports
from service.kafka import Producer
from service.settings import Settings
from tests.factories import SentCampaign, sent_campaign
from worker.ingester import Ingester


@pytest.fixture
async def ingester(sessions: async_sessionmaker[AsyncSession], migrated: Settings) -> Any:
    producer = Producer(migrated)
    yield Ingester(sessions, producer, migrated)
    producer.close()


def _provider(kind: str, c: SentCampaign, i: int, at: datetime, **kw: Any) -> ProviderEvent:
    return ProviderEvent(
        type=kind,
        event_id=f"resend:{uuid.uuid4().hex}",
        provider_type=f"email.{kind}",
        email_id=c.provider_ids[i],
        occurred_at=at,
        **({"tags": c.tags(i)} | kw),
    )


def _own(kind: str, c: SentCampaign, i: int, at: datetime, **kw: Any) -> TrackingEvent:
    return TrackingEvent(
        type=kind,
        event_id=uuid.uuid4().hex,
        delivery_id=c.delivery_ids[i],
        occurred_at=at,
        **kw,
    )


@pytest.fixture
async def measured(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, ingester: Ingester
) -> SentCampaign:
    """10 sent, 8 delivered, 1 hard bounce, 4 opened (one by a proxy only), 2 clicked."""
    campaign = await sent_campaign(sessions, sponsor, 10, sent_seconds_ago=30 * 86400)
    day = datetime.now(UTC).replace(hour=9, minute=15) - timedelta(days=5)
    events: list[TrackingEvent | ProviderEvent] = [
        _provider("delivered", campaign, i, day) for i in range(8)
    ]
    events.append(_provider("bounced", campaign, 9, day, bounce_type="Permanent"))
    events += [_own("open", campaign, i, day + timedelta(hours=1)) for i in range(3)]
    events.append(_own("open", campaign, 0, day + timedelta(hours=2)))
    events.append(_own("open", campaign, 3, day + timedelta(hours=2), machine="apple_mpp"))
    events.append(_own("click", campaign, 0, day + timedelta(days=1), position=0))
    events.append(_own("click", campaign, 1, day + timedelta(days=1), position=1))
    events.append(_own("click", campaign, 1, day + timedelta(days=1), position=1))
    await ingester.handle_events(events)
    return campaign


async def test_campaign_stats_give_figures_rates_and_links(
    client: httpx.AsyncClient, token: Any, measured: SentCampaign
) -> None:
    url = f"/api/v1/sponsors/{measured.sponsor_id}/campaigns/{measured.id}/stats"
    stats = (await client.get(url, headers=token(measured.sponsor_id, scopes="stats:read"))).json()
    expected = {
        "recipients": 10, "sent": 10, "delivered": 8, "bounced": 1, "complained": 0,
        "opened": 4, "opens": 5, "human_opened": 3, "clicked": 2, "clicks": 3,
        "human_clicked": 2, "unsubscribed": 0,
    }  # fmt: skip
    assert {k: stats[k] for k in expected} == expected
    assert stats["delivery_rate"] == 80.0
    assert stats["bounce_rate"] == 10.0
    assert stats["open_rate"] == 50.0
    assert stats["click_rate"] == 25.0
    assert stats["click_to_open_rate"] == 50.0
    assert stats["complaint_rate"] == 0.0
    assert stats["timeline"] is None
    assert [
        (link["position"], link["clicks"], link["human_clicks"]) for link in stats["links"]
    ] == [
        (0, 1, 1),
        (1, 2, 2),
    ]


async def test_timeline_by_hour_and_by_day(
    client: httpx.AsyncClient, token: Any, measured: SentCampaign
) -> None:
    url = f"/api/v1/sponsors/{measured.sponsor_id}/campaigns/{measured.id}/stats"
    headers = token(measured.sponsor_id, scopes="stats:read")
    hourly = (await client.get(url, params={"timeline": "hour"}, headers=headers)).json()
    day = (datetime.now(UTC) - timedelta(days=5)).date().isoformat()
    next_day = (datetime.now(UTC) - timedelta(days=4)).date().isoformat()
    points = {p["at"][:13]: p for p in hourly["timeline"]}
    assert points[f"{day}T09"]["delivered"] == 8 and points[f"{day}T09"]["bounced"] == 1
    assert points[f"{day}T10"]["opens"] == 3
    assert (points[f"{day}T11"]["opens"], points[f"{day}T11"]["human_opens"]) == (2, 1)
    assert points[f"{next_day}T09"]["clicks"] == 3
    daily = (await client.get(url, params={"timeline": "day"}, headers=headers)).json()
    assert [(p["at"][:10], p["opens"], p["clicks"]) for p in daily["timeline"]] == [
        (day, 5, 0),
        (next_day, 0, 3),
    ]
    bad = await client.get(url, params={"timeline": "minute"}, headers=headers)
    assert bad.status_code == 422


async def test_stats_need_the_scope_and_the_sponsor(
    client: httpx.AsyncClient, token: Any, measured: SentCampaign
) -> None:
    url = f"/api/v1/sponsors/{measured.sponsor_id}/campaigns/{measured.id}/stats"
    no_scope = await client.get(url, headers=token(measured.sponsor_id, scopes="campaigns:read"))
    assert no_scope.status_code == 403
    other = await client.get(url, headers=token("someone-else", scopes="stats:read"))
    assert other.status_code == 403
    assert (await client.get(url)).status_code == 401


async def test_deliveries_export_streams_every_row_as_csv(
    client: httpx.AsyncClient,
    token: Any,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 12_345, links={})
    url = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign.id}/deliveries"
    response = await client.get(
        url, params={"format": "csv"}, headers=token(sponsor, scopes="stats:read")
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 12_345
    assert {int(r["id"]) for r in rows} == set(campaign.delivery_ids)
    assert {r["status"] for r in rows} == {"sent"}
    # JSON pages still need campaigns:read.
    page = await client.get(url, headers=token(sponsor, scopes="stats:read"))
    assert page.status_code == 403


# Cells a spreadsheet would run as a formula, as leads and providers could send them.
FORMULAS = ('=HYPERLINK("https://evil.example","open me")', "+1+1", "-2+3", "@SUM(A1:A2)")


def test_an_export_cell_a_spreadsheet_would_run_is_quoted_and_data_is_kept() -> None:
    for formula in (*FORMULAS, "\tcmd", "\rcmd"):
        assert exports.safe_cell(formula) == "'" + formula
    assert exports.safe_cell("ada@example.com") == "ada@example.com"
    assert exports.safe_cell(-3) == -3
    assert exports.safe_cell(None) == ""


async def test_deliveries_export_neutralises_formulas_in_addresses_and_errors(
    client: httpx.AsyncClient,
    token: Any,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
) -> None:
    campaign = await sent_campaign(sessions, sponsor, len(FORMULAS), links={})
    async with sessions.begin() as session:
        for delivery_id, formula in zip(campaign.delivery_ids, FORMULAS, strict=True):
            await session.execute(
                text(
                    "UPDATE campaign_deliveries SET recipient_email = :f, last_error = :e "
                    "WHERE id = :id"
                ),
                {"f": formula, "e": formula, "id": delivery_id},
            )
    url = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign.id}/deliveries"
    response = await client.get(
        url, params={"format": "csv"}, headers=token(sponsor, scopes="stats:read")
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(r["recipient_email"] for r in rows) == sorted("'" + f for f in FORMULAS)
    assert sorted(r["last_error"] for r in rows) == sorted("'" + f for f in FORMULAS)
    assert {r["status"] for r in rows} == {"sent"}


async def test_analysts_get_one_row_per_campaign_with_totals(
    client: httpx.AsyncClient,
    token: Any,
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    measured: SentCampaign,
) -> None:
    event = f"ev-{uuid.uuid4().hex[:8]}"
    tagged = await sent_campaign(sessions, sponsor, 4, event_id=event)
    headers = token(sponsor, scopes="stats:read")
    body = (
        await client.get("/api/v1/stats/campaigns", params={"sponsor_id": sponsor}, headers=headers)
    ).json()
    assert {item["campaign_id"] for item in body["items"]} == {str(measured.id), str(tagged.id)}
    assert body["totals"]["sent"] == 14 and body["totals"]["delivered"] == 8
    # Counters are JSON numbers, as the schema says (sums in PostgreSQL are numeric).
    assert all(type(item["sent"]) is int for item in body["items"])
    assert body["totals"]["delivery_rate"] == round(100 * 8 / 14, 2)

    by_event = (
        await client.get("/api/v1/stats/campaigns", params={"event_id": event}, headers=admin)
    ).json()
    assert [item["campaign_id"] for item in by_event["items"]] == [str(tagged.id)]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = await client.get(
        "/api/v1/stats/campaigns", params={"sponsor_id": sponsor, "from": future}, headers=headers
    )
    assert later.json()["items"] == []

    exported = await client.get(
        "/api/v1/stats/campaigns", params={"sponsor_id": sponsor, "format": "csv"}, headers=headers
    )
    lines = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(lines) == 3 and lines[-1]["campaign_id"] == "TOTAL" and lines[-1]["sent"] == "14"

    # A token sees only its own sponsors.
    forbidden = await client.get(
        "/api/v1/stats/campaigns", params={"sponsor_id": "not-mine"}, headers=headers
    )
    assert forbidden.status_code == 403
    mine_only = (await client.get("/api/v1/stats/campaigns", headers=headers)).json()
    assert {item["sponsor_id"] for item in mine_only["items"]} == {sponsor}


async def test_analysts_export_neutralises_formulas_in_campaign_names(
    client: httpx.AsyncClient,
    token: Any,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
) -> None:
    for formula in FORMULAS:
        campaign = await sent_campaign(sessions, sponsor, 1, links={})
        async with sessions.begin() as session:
            await session.execute(
                text("UPDATE campaigns SET name = :f WHERE id = :id"),
                {"f": formula, "id": campaign.id},
            )
    exported = await client.get(
        "/api/v1/stats/campaigns",
        params={"sponsor_id": sponsor, "format": "csv"},
        headers=token(sponsor, scopes="stats:read"),
    )
    lines = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(line["name"] for line in lines[:-1]) == sorted("'" + f for f in FORMULAS)
    assert lines[-1]["sent"] == str(len(FORMULAS))


async def test_an_unknown_or_foreign_campaign_is_a_404(
    client: httpx.AsyncClient, token: Any, measured: SentCampaign
) -> None:
    headers = token(measured.sponsor_id, scopes="stats:read")
    unknown = f"/api/v1/sponsors/{measured.sponsor_id}/campaigns/{uuid.uuid4()}/stats"
    answer = await client.get(unknown, headers=headers)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "campaign_not_found"
    other = token("someone-else", scopes="stats:read")
    foreign = f"/api/v1/sponsors/someone-else/campaigns/{measured.id}/stats"
    assert (await client.get(foreign, headers=other)).status_code == 404


async def test_a_lost_database_connection_is_a_503_once_then_the_api_recovers(
    client: httpx.AsyncClient,
    token: Any,
    measured: SentCampaign,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The API's pool does not ping before lending a connection: when PostgreSQL drops
    its connections (a restart, a failover), one request per process hears of it as a
    503 with retry-after, never a 500, and the next gets a fresh connection."""
    url = f"/api/v1/sponsors/{measured.sponsor_id}/campaigns/{measured.id}/stats"
    headers = token(measured.sponsor_id, scopes="stats:read")
    assert (await client.get(url, headers=headers)).status_code == 200
    async with sessions() as session:
        killed = (
            await session.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'campaign-service-api'"
                )
            )
        ).scalar_one()
    assert killed >= 1
    answers = [await client.get(url, headers=headers) for _ in range(3)]
    codes = [answer.status_code for answer in answers]
    assert set(codes) <= {200, 503} and codes[-1] == 200, codes
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "database_unavailable"
            assert answer.headers["retry-after"] == "1"
