"""Previews, test sends, view in browser, and the postal address rule."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.models import CampaignDelivery, Lead
from tests import factories
from tests.conftest import TokenFactory, eventually
from tests.fakes.resend_server import FakeResend, RecordedMessage


async def new_campaign(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, **overrides: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor),
        json=factories.campaign(**overrides),
    )
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


async def lead_id(sessions: async_sessionmaker[AsyncSession], sponsor: str, email: str) -> int:
    async with sessions() as session:
        found = await session.scalar(
            select(Lead.id).where(Lead.sponsor_id == sponsor, Lead.email == email)
        )
    assert found is not None
    return int(found)


# ---------------------------------------------------------------- preview


async def test_preview_renders_a_sample_lead_as_html_text_or_json(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    campaign = await new_campaign(client, sponsor, token, draft=True)
    url = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign['id']}/preview"
    html = await client.get(url, headers=token(sponsor))
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "Hi Sam Sample" in html.text and "1 Test Street, Berlin" in html.text
    text = await client.get(url, headers=token(sponsor), params={"format": "text"})
    assert text.headers["content-type"].startswith("text/plain")
    assert "welcome from Example Corp." in text.text
    both = (await client.get(url, headers=token(sponsor), params={"format": "json"})).json()
    assert both["subject"] == "Hello Sam Sample"
    assert both["html"] == html.text and both["text"] == text.text


async def test_preview_for_a_lead_is_what_that_lead_gets(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    rows = [{"email": "rtl@preview.example", "name": "<b>سارة</b> 🌟", "company": "Ünïcode & Co"}]
    await factories.add_leads(client, sponsor, token(sponsor), rows)
    lead = await lead_id(sessions, sponsor, "rtl@preview.example")
    campaign = await new_campaign(client, sponsor, token, draft=True)
    url = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign['id']}/preview"
    got = (
        await client.get(url, headers=token(sponsor), params={"lead_id": lead, "format": "json"})
    ).json()
    assert got["subject"] == "Hello <b>سارة</b> 🌟"
    assert "Hi &lt;b&gt;سارة&lt;/b&gt; 🌟" in got["html"]
    assert "welcome from Ünïcode &amp; Co." in got["html"]
    assert "welcome from Ünïcode & Co." in got["text"]


async def test_preview_of_another_sponsors_lead_is_404(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    campaign = await new_campaign(client, sponsor, token, draft=True)
    response = await client.get(
        f"/api/v1/sponsors/{sponsor}/campaigns/{campaign['id']}/preview",
        headers=token(sponsor),
        params={"lead_id": 2**40},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "lead_not_found"


# ---------------------------------------------------------------- test sends


async def test_a_test_send_goes_through_the_sender_marked_and_uncounted(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    fake: FakeResend,
    workers: None,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    campaign = await new_campaign(client, sponsor, token, draft=True)
    addresses = [f"qa{i}-{uuid.uuid4().hex[:6]}@test-send.example" for i in range(3)]
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns/{campaign['id']}/test",
        headers=token(sponsor),
        json={"emails": addresses},
    )
    assert response.status_code == 202, response.text
    assert response.json()["recipients"] == addresses

    async def arrived() -> list[RecordedMessage]:
        got = [m for m in fake.messages if m.to[0] in addresses]
        return got if len(got) == 3 else []

    messages = await eventually(arrived)
    for message in messages:
        assert message.subject == "[TEST] Hello Sam Sample"
        assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message.text and "1 Test Street, Berlin" in message.text
    stats = (
        await client.get(
            f"/api/v1/sponsors/{sponsor}/campaigns/{campaign['id']}/stats", headers=token(sponsor)
        )
    ).json()
    assert stats["sent"] == 0 and stats["status"] == "draft"
    async with sessions() as session:
        rows = await session.scalar(
            select(func.count())
            .select_from(CampaignDelivery)
            .where(CampaignDelivery.campaign_id == campaign["id"])
        )
    assert rows == 0


async def test_a_test_send_takes_at_most_ten_valid_addresses(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    campaign = await new_campaign(client, sponsor, token, draft=True)
    url = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign['id']}/test"
    too_many = [f"a{i}@example.com" for i in range(11)]
    response = await client.post(url, headers=token(sponsor), json={"emails": too_many})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "emails"
    bad = await client.post(url, headers=token(sponsor), json={"emails": ["ok@example.com", "x"]})
    assert bad.status_code == 422
    assert bad.json()["error"] == {
        "code": "invalid_email",
        "message": bad.json()["error"]["message"],
        "field": "emails.1",
    }


# ---------------------------------------------------------------- view in browser, tracking


async def test_view_in_browser_shows_the_delivery_and_refuses_bad_tokens(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, fake: FakeResend, workers: None
) -> None:
    domain = f"{sponsor}.view"
    await factories.add_leads(
        client, sponsor, token(sponsor), [{"email": f"viewer@{domain}", "name": "Vera Viewer"}]
    )
    await new_campaign(client, sponsor, token)

    async def sent() -> list[RecordedMessage]:
        return fake.messages_to(f"viewer@{domain}")

    (message,) = await eventually(sent)
    assert message.text
    match = re.search(r"View this email in your browser: (\S+)", message.text)
    assert match
    path = httpx.URL(match.group(1)).path
    page = await client.get(path)
    assert page.status_code == 200
    assert "Hi Vera Viewer" in page.text and page.headers["cache-control"] == "no-store"
    assert (await client.get("/v/not-a-token")).status_code == 404
    unsubscribe_token = re.search(r"/u/([A-Za-z0-9_-]+)", message.text)
    assert unsubscribe_token
    assert (await client.get(f"/v/{unsubscribe_token.group(1)}")).status_code == 404


async def test_tracking_off_sends_plain_links_and_no_pixel(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, fake: FakeResend, workers: None
) -> None:
    domain = f"{sponsor}.plain"
    await factories.add_leads(client, sponsor, token(sponsor), [{"email": f"p@{domain}"}])
    await new_campaign(
        client,
        sponsor,
        token,
        tracking_enabled=False,
        message_body="See [the map](https://example.com/map)",
    )

    async def sent() -> list[RecordedMessage]:
        return fake.messages_to(f"p@{domain}")

    (message,) = await eventually(sent)
    assert message.html and 'href="https://example.com/map"' in message.html
    assert "/o/" not in message.html and "/c/" not in message.html
    assert "/u/" in message.html  # the unsubscribe link never goes away


# ---------------------------------------------------------------- postal address


async def test_a_sponsor_without_a_postal_address_cannot_send(
    client: httpx.AsyncClient, admin: dict[str, str], token: TokenFactory
) -> None:
    sponsor = f"nopost-{uuid.uuid4().hex[:8]}"
    response = await client.put(
        f"/api/v1/sponsors/{sponsor}",
        headers=admin,
        json={"name": "No Post", "from_email": "a@nopost.example"},
    )
    assert response.status_code == 201
    headers = token(sponsor)
    base = f"/api/v1/sponsors/{sponsor}/campaigns"
    queued = await client.post(base, headers=headers, json=factories.campaign())
    assert queued.status_code == 422
    assert queued.json()["error"]["code"] == "postal_address_required"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    scheduled = await client.post(base, headers=headers, json=factories.campaign(send_at=later))
    assert scheduled.json()["error"]["code"] == "postal_address_required"
    draft = await client.post(base, headers=headers, json=factories.campaign(draft=True))
    assert draft.status_code == 202
    draft_id = draft.json()["id"]
    for action, body in (("send", None), ("schedule", {"send_at": later})):
        response = await client.post(f"{base}/{draft_id}/{action}", headers=headers, json=body)
        assert response.status_code == 422, (action, response.text)
        assert response.json()["error"]["code"] == "postal_address_required"
        assert response.json()["error"]["field"] == "postal_address"


# ---------------------------------------------------------------- render errors at send time


async def test_a_recipient_that_fails_to_render_fails_alone(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, fake: FakeResend, workers: None
) -> None:
    domain = f"{sponsor}.render"
    rows = [
        {"email": f"good@{domain}", "attributes": {"visits": 2}},
        {"email": f"bad@{domain}", "attributes": {"visits": "many"}},
    ]
    await factories.add_leads(client, sponsor, token(sponsor), rows)
    campaign = await new_campaign(
        client, sponsor, token, message_body="Visit number {{ attributes.visits + 1 }}"
    )
    base = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign['id']}"

    async def finished() -> dict[str, Any] | None:
        stats: dict[str, Any] = (await client.get(f"{base}/stats", headers=token(sponsor))).json()
        return stats if stats["pending"] == 0 and stats["sent"] + stats["failed"] == 2 else None

    stats = await eventually(finished)
    assert (stats["sent"], stats["failed"]) == (1, 1)
    failed = (
        await client.get(f"{base}/deliveries", headers=token(sponsor), params={"status": "failed"})
    ).json()["items"]
    assert [row["recipient_email"] for row in failed] == [f"bad@{domain}"]
    assert failed[0]["last_error"].startswith("render_error: TypeError")
    (message,) = fake.messages_to(f"good@{domain}")
    assert message.text and "Visit number 3" in message.text
