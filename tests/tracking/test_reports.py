"""Campaign report pages: share links made with ``stats:read``, the public page they open,
its figures against the stats endpoint's, and a render in headless Chromium."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.tracking import ProviderEvent, TrackingEvent
from service.kafka import Producer
from service.reports import charts, links
from service.reports import logic as report_logic
from service.retention import repository as partitions
from service.settings import Settings
from service.tracking.tokens import Kind, TokenSigner
from tests.browser import SCREENSHOTS, assert_not_blank, browse, png_pixels, sample
from tests.conftest import eventually, served
from tests.factories import SentCampaign, sent_campaign
from worker.ingester import Ingester

BROWSER = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"}
PROXY = {"User-Agent": "Mozilla/5.0 (Windows NT 5.1) (via ggpht.com GoogleImageProxy)"}
FIGURE = re.compile(r'data-figure="([^"]+)"[^>]*>([^<]*)<')


@pytest.fixture
def signer(migrated: Settings) -> TokenSigner:
    return migrated.tracking_signer()


def _stats_url(c: SentCampaign) -> str:
    return f"/api/v1/sponsors/{c.sponsor_id}/campaigns/{c.id}/stats"


def _links_url(c: SentCampaign) -> str:
    return f"/api/v1/sponsors/{c.sponsor_id}/campaigns/{c.id}/report-links"


async def _partitions_made(sessions: async_sessionmaker[AsyncSession]) -> bool:
    async with sessions() as session:
        ahead = await partitions.highest_at(session)
    return ahead is not None and ahead > datetime.now(UTC) + timedelta(days=2)


@pytest.fixture
async def reported(
    workers: None,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    migrated: Settings,
    client: httpx.AsyncClient,
    signer: TokenSigner,
    token: Any,
) -> SentCampaign:
    """6 sent: 5 delivered, 1 hard bounce with its reason; pixel hits (one by a proxy)
    and clicks through the real tracking routes, ingested by the running workers."""
    # The relay creates partitions when it starts; writing rows while it does can
    # deadlock (its DDL locks tables in another order), so let its first round finish.
    await eventually(lambda: _partitions_made(sessions))
    campaign = await sent_campaign(sessions, sponsor, 6)
    now = datetime.now(UTC)
    events: list[TrackingEvent | ProviderEvent] = [
        ProviderEvent(
            type="delivered",
            event_id=f"resend:{uuid.uuid4().hex}",
            provider_type="email.delivered",
            email_id=campaign.provider_ids[i],
            tags=campaign.tags(i),
            occurred_at=now - timedelta(minutes=50),
        )
        for i in range(5)
    ]
    events.append(
        ProviderEvent(
            type="bounced",
            event_id=f"resend:{uuid.uuid4().hex}",
            provider_type="email.bounced",
            email_id=campaign.provider_ids[5],
            tags=campaign.tags(5),
            occurred_at=now - timedelta(minutes=50),
            bounce_type="Permanent",
            detail="mailbox does not exist",
        )
    )
    producer = Producer(migrated)
    try:
        await Ingester(sessions, producer, migrated).handle_events(events)
    finally:
        producer.close()
    ids = campaign.delivery_ids
    for i in range(3):
        await client.get(f"/o/{signer.sign(Kind.OPEN, ids[i])}", headers=BROWSER)
    await client.get(f"/o/{signer.sign(Kind.OPEN, ids[3])}", headers=PROXY)
    for i, position in ((0, 0), (1, 1), (1, 1)):
        await client.get(f"/c/{signer.sign(Kind.CLICK, ids[i], position)}", headers=BROWSER)

    async def settled() -> bool:
        stats = (
            await client.get(_stats_url(campaign), headers=token(sponsor, scopes="stats:read"))
        ).json()
        return bool(stats["opens"] == 4 and stats["clicks"] == 3)

    await eventually(settled)
    return campaign


async def _share(client: httpx.AsyncClient, token: Any, c: SentCampaign, **body: Any) -> Any:
    response = await client.post(
        _links_url(c), json=body, headers=token(c.sponsor_id, scopes="stats:read")
    )
    assert response.status_code == 201, response.text
    return response.json()


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _figures(page: str) -> dict[str, str]:
    return {name: unescape(value).strip() for name, value in FIGURE.findall(page)}


async def test_a_report_link_needs_stats_read_and_is_a_signed_expiring_url(
    client: httpx.AsyncClient,
    token: Any,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    migrated: Settings,
    signer: TokenSigner,
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 2)
    url = _links_url(campaign)
    no_scope = await client.post(url, json={}, headers=token(sponsor, scopes="campaigns:read"))
    assert no_scope.status_code == 403
    assert (await client.post(url, json={})).status_code == 401
    other = await client.post(url, json={}, headers=token("someone-else", scopes="stats:read"))
    assert other.status_code == 403

    link = await _share(client, token, campaign, ttl_seconds=3600)
    assert link["url"].startswith(f"{migrated.public_base_url}/reports/campaigns/{campaign.id}?")
    expires_at = datetime.fromisoformat(link["expires_at"])
    assert timedelta(minutes=59) < expires_at - datetime.now(UTC) <= timedelta(hours=1)
    shared = parse_qs(urlsplit(link["url"]).query)["token"][0]
    assert links.verify(signer, shared, campaign.id, datetime.now(UTC))
    assert not links.verify(signer, shared, campaign.id, expires_at + timedelta(seconds=1))

    default = await _share(client, token, campaign)
    left = datetime.fromisoformat(default["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < left <= timedelta(days=7)
    too_long = await client.post(
        url, json={"ttl_seconds": 31 * 86400}, headers=token(sponsor, scopes="stats:read")
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["field"] == "ttl_seconds"
    unknown = f"/api/v1/sponsors/{sponsor}/campaigns/{uuid.uuid4()}/report-links"
    missing = await client.post(unknown, json={}, headers=token(sponsor, scopes="stats:read"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "campaign_not_found"


async def test_expired_tampered_or_foreign_report_links_get_a_404_page(
    client: httpx.AsyncClient,
    token: Any,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    signer: TokenSigner,
) -> None:
    campaign = await sent_campaign(sessions, sponsor, 2)
    other = await sent_campaign(sessions, sponsor, 2)
    good = parse_qs(urlsplit((await _share(client, token, campaign))["url"]).query)["token"][0]
    page = f"/reports/campaigns/{campaign.id}"
    assert (await client.get(page, params={"token": good})).status_code == 200

    expired = links.sign(signer, campaign.id, datetime.now(UTC) - timedelta(seconds=1))
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    foreign_key = links.sign(
        TokenSigner(b"some-other-secret-0123456789"), campaign.id, datetime.now(UTC) + timedelta(1)
    )
    pixel = signer.sign(Kind.OPEN, campaign.delivery_ids[0])
    for bad in (expired, tampered, foreign_key, pixel, "", "not-a-token"):
        response = await client.get(page, params={"token": bad})
        assert response.status_code == 404, bad
        assert response.headers["content-type"].startswith("text/html")
        assert "not valid or has expired" in response.text
    for path in (f"/reports/campaigns/{other.id}", "/reports/campaigns/not-a-uuid"):
        response = await client.get(path, params={"token": good})
        assert response.status_code == 404, path


async def test_the_report_shows_the_same_figures_as_the_stats_endpoint(
    client: httpx.AsyncClient, token: Any, reported: SentCampaign
) -> None:
    headers = token(reported.sponsor_id, scopes="stats:read")
    stats = (await client.get(_stats_url(reported), headers=headers)).json()
    link = await _share(client, token, reported)
    response = await client.get(_path(link["url"]))
    assert response.status_code == 200
    assert "no-store" in response.headers["cache-control"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    figures = _figures(page)

    expected = {"sent": 6, "delivered": 5, "bounced": 1, "opened": 4, "human_opened": 3}
    assert {k: stats[k] for k in expected} == expected
    assert (stats["clicks"], stats["clicked"]) == (3, 2)
    for name in ("recipients", "sent", "delivered", "bounced", "complained", "opened", "opens",
                 "human_opened", "clicked", "clicks", "human_clicked", "unsubscribed"):  # fmt: skip
        assert figures[name] == str(stats[name]), name
    for rate in ("delivery_rate", "open_rate", "click_rate", "bounce_rate"):
        assert figures[rate] == f"{stats[rate]} %", rate
    assert figures["status"] == stats["status"]
    assert figures["audience_size"] == str(stats["total_recipients"])
    for item in stats["links"]:
        assert figures[f"link-{item['position']}-clicks"] == str(item["clicks"])
        assert figures[f"link-{item['position']}-human_clicks"] == str(item["human_clicks"])
    assert "mailbox does not exist" in page and "Permanent" in page
    assert page.count("<svg") == 4  # delivered, opens and clicks over time; clicks per link
    assert "<script" not in page and "http://" not in page.split("<body>")[1].replace(
        "http://www.w3.org/2000/svg", ""
    ).replace("https://sponsor.example", "")


async def test_the_report_renders_in_headless_chromium_with_its_figures(
    client: httpx.AsyncClient,
    token: Any,
    reported: SentCampaign,
    migrated: Settings,
    tmp_path: Path,
) -> None:
    path = _path((await _share(client, token, reported, ttl_seconds=600))["url"])
    shot = SCREENSHOTS / "campaign-report.png"
    with served(migrated) as base:
        dom = await asyncio.to_thread(browse, base + path, shot, tmp_path / "profile", 1000, 1800)
    figures = _figures(dom)
    assert figures["sent"] == "6" and figures["human_opened"] == "3"
    assert figures["clicks"] == "3" and figures["bounced"] == "1"
    assert "Clicks per link" in dom and "mailbox does not exist" in dom
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 1800)
    # A report is mostly white page: text, tables and a few chart points when every
    # event fell in one hour; 1 % of a 1000 x 1800 page is still 18,000 pixels of ink.
    assert_not_blank(sample(rows), min_inked=0.01)


def test_quiet_hours_are_drawn_as_zeros_so_the_x_axis_is_time() -> None:
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    zero = {"delivered": 0, "bounced": 0, "complained": 0, "opens": 0, "human_opens": 0,
            "clicks": 0, "human_clicks": 0, "unsubscribed": 0}  # fmt: skip
    points = [{**zero, "at": start, "opens": 2}, {**zero, "at": start + timedelta(hours=3)}]
    filled = report_logic._filled(points, "hour")
    assert [p["at"].hour for p in filled] == [9, 10, 11, 12]
    assert [p["opens"] for p in filled] == [2, 0, 0, 0]
    assert len(report_logic.time_charts(points, "hour")) == 3


def test_chart_text_is_escaped() -> None:
    svg = charts.bar_chart("Clicks per link", [("https://x.example/?a=<script>&b", 3, 1)])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    line = charts.line_chart("<b>", ["<i>"], [charts.Series("</svg>", [1], "#000")])
    assert "<b>" not in line and "<i>" not in line and line.count("</svg>") == 1
