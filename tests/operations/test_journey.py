"""One recipient's whole journey across every part: the message they get, the pixel,
the tracked link, the one-click unsubscribe, the stats, and the next campaign."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests import factories
from tests.conftest import TokenFactory, eventually
from tests.fakes.resend_server import FakeResend

pytestmark = pytest.mark.usefixtures("workers")

TARGET = "https://sponsor.example/offer?utm=journey"


async def test_open_click_and_unsubscribe_flow_from_a_real_message_into_stats(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, fake: FakeResend
) -> None:
    headers = token(sponsor)
    campaigns = f"/api/v1/sponsors/{sponsor}/campaigns"
    domain = f"{sponsor}.example"
    await factories.add_leads(client, sponsor, headers, factories.leads(3, domain=domain))
    created = await client.post(
        campaigns,
        headers=headers,
        json=factories.campaign(message_body=f"Hi {{{{ name }}}}, see [our offer]({TARGET})."),
    )
    assert created.status_code == 202, created.text
    campaign_id = created.json()["id"]

    async def stats() -> dict[str, Any]:
        response = await client.get(f"{campaigns}/{campaign_id}/stats", headers=headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def sent() -> dict[str, Any] | None:
        figures = await stats()
        return figures if figures["status"] == "sent" else None

    await eventually(sent, within=60)
    reader = f"lead0@{domain}"
    [message] = fake.messages_to(reader)
    assert message.html is not None
    # The links in the message as the recipient's mail client sees them.
    click = re.search(r'href="https?://[^/"]+(/c/[A-Za-z0-9_-]+)"', message.html)
    pixel = re.search(r'src="https?://[^/"]+(/o/[A-Za-z0-9_-]+)"', message.html)
    unsubscribe = re.search(
        r"<https?://[^/>]+(/u/[A-Za-z0-9_-]+)>", message.headers["List-Unsubscribe"]
    )
    assert click and pixel and unsubscribe, message.html

    human = {"User-Agent": "Mozilla/5.0 (Macintosh) Thunderbird/128.0"}
    opened = await client.get(pixel.group(1), headers=human)
    assert opened.status_code == 200
    assert opened.headers["content-type"] == "image/gif"
    clicked = await client.get(click.group(1), headers=human)
    assert clicked.status_code == 302
    assert clicked.headers["location"] == TARGET
    confirm_page = await client.get(unsubscribe.group(1))
    assert confirm_page.status_code == 200
    one_click = await client.post(unsubscribe.group(1), data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200

    async def counted() -> dict[str, Any] | None:
        figures = await stats()
        wanted = (figures["opened"], figures["clicked"], figures["unsubscribed"])
        return figures if wanted == (1, 1, 1) else None

    figures = await eventually(counted, within=60)
    assert figures["sent"] == 3
    assert [link["url"] for link in figures["links"]] == [TARGET]
    exposed = (await client.get("/metrics")).text
    for kind in ("open", "click", "unsubscribe"):
        assert f'tracking_hits_total{{kind="{kind}"}}' in exposed
    assert "ingester_batch_size_count" in exposed

    # The next campaign skips the address that unsubscribed, and says so.
    fake.reset()
    again = await client.post(campaigns, headers=headers, json=factories.campaign())
    assert again.status_code == 202, again.text
    campaign_id = again.json()["id"]
    figures = await eventually(sent, within=60)
    assert (figures["sent"], figures["suppressed"]) == (2, 1)
    assert not fake.messages_to(reader)
