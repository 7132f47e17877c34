"""A message type's report page: share links made with ``stats:read``, the figures
against the type's stats endpoint, and a render in headless Chromium."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.reports import links
from service.settings import Settings
from service.tracking.tokens import Kind
from tests.browser import SCREENSHOTS, assert_not_blank, browse, png_pixels, sample
from tests.conftest import TokenFactory, served
from tests.fakes.resend_server import FakeResend
from tests.messages.test_message_tracking import (
    BODY,
    BROWSER,
    address,
    back_date,
    reaches,
    resend,
    sent,
)
from tests.messages.test_messages import Api
from tests.tracking.test_reports import _figures, _path
from tests.tracking.test_webhooks import post

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


@pytest.fixture
async def reported(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> dict[str, Any]:
    """A type with 3 messages sent: 2 delivered (one opened and clicked by a person),
    1 hard bounce with its reason."""
    message_type = await api.add_type(key="order.shipped", html_body=BODY)
    sent_ones = [await sent(api, fake, address()) for _ in range(3)]
    for message_id, email_id, _, _ in sent_ones[:2]:
        await back_date(sessions, message_id)
        body = resend("delivered", message_id, email_id)
        assert (await post(api.client, body)).status_code == 200
    bounced_id, bounced_email, _, _ = sent_ones[2]
    body = resend("bounced", bounced_id, bounced_email)
    assert (await post(api.client, body)).status_code == 200
    first, _, pixel, link = sent_ones[0]
    await api.client.get(pixel, headers=BROWSER)
    await api.client.get(link, headers=BROWSER)
    await reaches(api, first, "clicked")
    await reaches(api, sent_ones[1][0], "delivered")
    await reaches(api, bounced_id, "bounced")
    return message_type


async def share(api: Api, token: TokenFactory, type_id: str, **body: Any) -> httpx.Response:
    return await api.client.post(
        api.url(f"/message-types/{type_id}/report-links"),
        json=body,
        headers=token(api.sponsor, scopes="stats:read"),
    )


async def test_a_type_report_link_needs_stats_read_and_opens_only_that_type(
    api: Api, token: TokenFactory, migrated: Settings
) -> None:
    message_type = await api.add_type(key="order.shipped", html_body=BODY)
    url = api.url(f"/message-types/{message_type['id']}/report-links")
    no_scope = await api.client.post(url, json={}, headers=token(api.sponsor, scopes="x:y"))
    assert no_scope.status_code == 403
    response = await share(api, token, message_type["id"], ttl_seconds=600)
    assert response.status_code == 201, response.text
    link = response.json()["url"]
    assert link.startswith(f"{migrated.public_base_url}/reports/message-types/{message_type['id']}")
    assert (await api.client.get(_path(link))).status_code == 200
    missing = await share(api, token, str(uuid.uuid4()))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "message_type_not_found"

    good = parse_qs(urlsplit(link).query)["token"][0]
    signer = migrated.tracking_signer()
    type_id = uuid.UUID(message_type["id"])
    as_campaign = links.sign(signer, type_id, datetime.now(UTC) + timedelta(hours=1))
    expired = links.sign(signer, type_id, datetime.now(UTC) - timedelta(1), Kind.TYPE_REPORT)
    for bad in (as_campaign, expired, good[:-2] + "AA", ""):
        page = await api.client.get(
            f"/reports/message-types/{message_type['id']}", params={"token": bad}
        )
        assert page.status_code == 404, bad
    campaign_page = await api.client.get(
        f"/reports/campaigns/{message_type['id']}", params={"token": good}
    )
    assert campaign_page.status_code == 404


async def test_the_type_report_shows_the_same_figures_as_the_type_stats_endpoint(
    api: Api, token: TokenFactory, reported: dict[str, Any]
) -> None:
    type_id = reported["id"]
    stats_url = api.url(f"/message-types/{type_id}/stats")
    stats = (await api.client.get(stats_url, headers=api.headers)).json()
    expected = {"sent": 3, "delivered": 2, "bounced": 1, "opened": 1, "clicked": 1}
    assert {k: stats[k] for k in expected} == expected
    link = (await share(api, token, type_id)).json()["url"]
    response = await api.client.get(_path(link))
    assert response.status_code == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    figures = _figures(response.text)
    for name in ("messages", "sent", "delivered", "bounced", "complained", "opened", "clicked"):
        assert figures[name] == str(stats[name]), name
    for rate in ("delivery_rate", "open_rate", "click_rate", "bounce_rate"):
        assert figures[rate] == f"{stats[rate]} %", rate
    for i, item in enumerate(stats["links"]):
        assert figures[f"link-{i}-clicks"] == str(item["clicks"])
    assert "suppression list" in response.text  # the bounce's reason
    assert response.text.count("<svg") == 5  # sent, delivered, opens, clicks; per link


async def test_the_type_report_renders_in_headless_chromium_with_its_figures(
    api: Api,
    token: TokenFactory,
    reported: dict[str, Any],
    migrated: Settings,
    tmp_path: Path,
) -> None:
    path = _path((await share(api, token, reported["id"], ttl_seconds=600)).json()["url"])
    shot = SCREENSHOTS / "message-type-report.png"
    with served(migrated) as base:
        dom = await asyncio.to_thread(browse, base + path, shot, tmp_path / "profile", 1000, 1800)
    figures = _figures(dom)
    assert (figures["sent"], figures["opened"], figures["bounced"]) == ("3", "1", "1")
    assert "Clicks per link" in dom
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 1800)
    assert_not_blank(sample(rows), min_inked=0.01)
