"""Public tracking endpoints: pixel, click redirect, one-click unsubscribe, the spool."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.settings import Settings
from service.tracking.emitter import Emitter
from service.tracking.fastpath import PIXEL
from service.tracking.machine import classify
from service.tracking.tokens import Kind, TokenSigner
from tests.conftest import eventually
from tests.factories import SentCampaign, delivery, sent_campaign

BROWSER = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"}

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def signer(migrated: Settings) -> TokenSigner:
    return migrated.tracking_signer()


@pytest.fixture
async def campaign(sessions: async_sessionmaker[AsyncSession], sponsor: str) -> SentCampaign:
    return await sent_campaign(sessions, sponsor, 5)


async def events(sessions: async_sessionmaker[AsyncSession], delivery_id: int) -> list[Any]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT * FROM delivery_events WHERE delivery_id = :id ORDER BY occurred_at"),
            {"id": delivery_id},
        )
        return [dict(r._mapping) for r in rows]


def forgeries(signer: TokenSigner, delivery_id: int) -> list[str]:
    good = signer.sign(Kind.OPEN, delivery_id)
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[-1] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    other_key = TokenSigner(b"some-other-secret-0123456789").sign(Kind.OPEN, delivery_id)
    return [tampered, good[:-3], good[:10], other_key, "", "not-a-token", "%00%ff", good + "AA"]


async def test_pixel_is_always_a_43_byte_gif_that_is_not_cached(
    client: httpx.AsyncClient, signer: TokenSigner, campaign: SentCampaign
) -> None:
    good = signer.sign(Kind.OPEN, campaign.delivery_ids[0])
    for token in [good, *forgeries(signer, campaign.delivery_ids[0])]:
        response = await client.get(f"/o/{token}", headers=BROWSER)
        assert response.status_code == 200, token
        assert response.content == PIXEL and len(response.content) == 43
        assert response.headers["content-type"] == "image/gif"
        assert "no-store" in response.headers["cache-control"]


async def test_a_genuine_open_is_ingested_and_forged_ones_record_nothing(
    client: httpx.AsyncClient,
    signer: TokenSigner,
    campaign: SentCampaign,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    target = campaign.delivery_ids[1]
    for token in forgeries(signer, target):
        await client.get(f"/o/{token}", headers=BROWSER)
    await client.get(f"/o/{signer.sign(Kind.OPEN, target)}", headers=BROWSER)
    row = await eventually(
        lambda: _where(delivery(sessions, target), lambda r: r["open_count"] == 1)
    )
    assert row["first_opened_at"] is not None and row["first_human_opened_at"] is not None
    await asyncio.sleep(1)  # forged hits would have arrived by now
    logged = await events(sessions, target)
    assert [e["type"] for e in logged] == ["open"]
    assert logged[0]["ip_hash"] is not None and b"127.0.0.1" not in logged[0]["ip_hash"]


async def test_proxy_opens_are_counted_but_not_human(
    client: httpx.AsyncClient,
    signer: TokenSigner,
    campaign: SentCampaign,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    target = campaign.delivery_ids[2]
    proxy = {"User-Agent": "Mozilla/5.0 (Windows NT 5.1) (via ggpht.com GoogleImageProxy)"}
    await client.get(f"/o/{signer.sign(Kind.OPEN, target)}", headers=proxy)
    row = await eventually(
        lambda: _where(delivery(sessions, target), lambda r: r["open_count"] == 1)
    )
    assert row["first_opened_at"] is not None
    assert row["first_human_opened_at"] is None
    assert (await events(sessions, target))[0]["is_machine"] is True


def test_machine_traffic_is_recognised() -> None:
    chrome = BROWSER["User-Agent"]
    assert classify("GET", chrome, "203.0.113.9") is None
    assert classify("HEAD", chrome, "203.0.113.9") == "head_request"
    assert classify("GET", "Mozilla/5.0", "17.58.1.2") == "apple_mpp"
    assert classify("GET", "Mozilla/5.0 GoogleImageProxy", "203.0.113.9") == "google_image_proxy"
    assert classify("GET", "Barracuda Sentinel (EE)", "203.0.113.9") == "security_gateway"
    assert classify("GET", "", "203.0.113.9") == "no_user_agent"


async def test_click_redirects_to_the_stored_url_and_counts(
    client: httpx.AsyncClient,
    signer: TokenSigner,
    campaign: SentCampaign,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    target = campaign.delivery_ids[3]
    token = signer.sign(Kind.CLICK, target, 1)
    # The same token replayed: every hit is a click, the recipient clicked once.
    for _ in range(3):
        response = await client.get(f"/c/{token}", headers=BROWSER)
        assert response.status_code == 302
        assert response.headers["location"] == campaign.links[1]
        assert "no-store" in response.headers["cache-control"]
    row = await eventually(
        lambda: _where(delivery(sessions, target), lambda r: r["click_count"] == 3)
    )
    assert row["first_clicked_at"] is not None and row["first_human_clicked_at"] is not None
    async with sessions() as session:
        clicks = await session.scalar(
            text("SELECT clicks FROM campaign_links WHERE campaign_id = :c AND position = 1"),
            {"c": campaign.id},
        )
        clicked = await session.scalar(
            text("SELECT sum(clicked) FROM campaign_stats WHERE campaign_id = :c"),
            {"c": campaign.id},
        )
    assert (clicks, clicked) == (3, 1)


async def test_no_redirect_is_ever_taken_from_the_request(
    client: httpx.AsyncClient, signer: TokenSigner, campaign: SentCampaign
) -> None:
    target = campaign.delivery_ids[0]
    good = signer.sign(Kind.CLICK, target, 0)
    attempts = [
        f"/c/{good[:-2]}?url=https://evil.example",
        "/c/https://evil.example",
        "/c/%2F%2Fevil.example",
        f"/c/{signer.sign(Kind.OPEN, target)}?next=https://evil.example",  # wrong kind
        f"/c/{signer.sign(Kind.CLICK, target, 7)}",  # no link at that position
        f"/c/{signer.sign(Kind.CLICK, 10**12, 0)}",  # no such delivery
        *(f"/c/{t}" for t in forgeries(signer, target)),
    ]
    for path in attempts:
        response = await client.get(path, headers=BROWSER)
        assert response.status_code == 404, path
        assert "location" not in response.headers
        assert "evil" not in response.text
    # Query strings never change the target of a genuine token.
    response = await client.get(f"/c/{good}?url=https://evil.example", headers=BROWSER)
    assert response.headers["location"] == campaign.links[0]


async def test_head_and_early_clicks_are_flagged_as_machine(
    client: httpx.AsyncClient,
    signer: TokenSigner,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
) -> None:
    fresh = await sent_campaign(sessions, sponsor, 2, sent_seconds_ago=1)
    head = await client.head(f"/c/{signer.sign(Kind.CLICK, fresh.delivery_ids[0], 0)}")
    assert head.status_code == 302
    await client.get(f"/c/{signer.sign(Kind.CLICK, fresh.delivery_ids[1], 0)}", headers=BROWSER)
    for delivery_id in fresh.delivery_ids:

        async def clicked(d: int = delivery_id) -> dict[str, Any] | None:
            row = await delivery(sessions, d)
            return row if row["click_count"] == 1 else None

        row = await eventually(clicked)
        assert row["first_clicked_at"] is not None
        assert row["first_human_clicked_at"] is None
    reasons = [(await events(sessions, d))[0]["payload"]["machine"] for d in fresh.delivery_ids]
    assert reasons == ["head_request", "early_click"]


async def test_tracking_off_records_nothing_but_links_still_work(
    client: httpx.AsyncClient,
    signer: TokenSigner,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
) -> None:
    quiet = await sent_campaign(sessions, sponsor, 1, tracking_enabled=False)
    target = quiet.delivery_ids[0]
    await client.get(f"/o/{signer.sign(Kind.OPEN, target)}", headers=BROWSER)
    response = await client.get(f"/c/{signer.sign(Kind.CLICK, target, 0)}", headers=BROWSER)
    assert response.status_code == 302
    # A tracked hit sent after them arrives after them on the same partition key order.
    other = await sent_campaign(sessions, sponsor, 1)
    await client.get(f"/o/{signer.sign(Kind.OPEN, other.delivery_ids[0])}", headers=BROWSER)
    await eventually(
        lambda: _where(delivery(sessions, other.delivery_ids[0]), lambda r: r["open_count"] == 1)
    )
    await asyncio.sleep(1)
    row = await delivery(sessions, target)
    assert (row["open_count"], row["click_count"], row["first_opened_at"]) == (0, 0, None)
    assert await events(sessions, target) == []


async def suppression(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, email: str
) -> str | None:
    async with sessions() as session:
        reason: str | None = await session.scalar(
            text("SELECT reason FROM suppressions WHERE sponsor_id = :s AND email = :e"),
            {"s": sponsor, "e": email},
        )
    return reason


async def test_get_unsubscribe_only_asks_to_confirm(
    client: httpx.AsyncClient,
    signer: TokenSigner,
    campaign: SentCampaign,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    token = signer.sign(Kind.UNSUBSCRIBE, campaign.delivery_ids[0])
    for _ in range(3):
        page = await client.get(f"/u/{token}", headers=BROWSER)
        assert page.status_code == 200
        assert 'method="post"' in page.text and "set-cookie" not in page.headers
    assert await suppression(sessions, campaign.sponsor_id, campaign.emails[0]) is None
    assert (await delivery(sessions, campaign.delivery_ids[0]))["unsubscribed_at"] is None


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_one_click_post_unsubscribes_before_answering(
    encoding: str,
    client: httpx.AsyncClient,
    signer: TokenSigner,
    campaign: SentCampaign,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    index = 1 if encoding == "urlencoded" else 2
    token = signer.sign(Kind.UNSUBSCRIBE, campaign.delivery_ids[index])
    body: dict[str, Any] = (
        {"data": {"List-Unsubscribe": "One-Click"}}
        if encoding == "urlencoded"
        else {"files": {"List-Unsubscribe": (None, "One-Click")}}
    )
    for _ in range(2):  # a second POST is harmless
        response = await client.post(f"/u/{token}", **body)
        assert response.status_code == 200
        assert "location" not in response.headers and "set-cookie" not in response.headers
    # Written synchronously: visible the moment the answer arrives.
    email = campaign.emails[index]
    assert await suppression(sessions, campaign.sponsor_id, email) == "unsubscribed"
    assert (await delivery(sessions, campaign.delivery_ids[index]))["unsubscribed_at"] is not None
    async with sessions() as session:
        counted = await session.scalar(
            text("SELECT sum(unsubscribed) FROM campaign_stats WHERE campaign_id = :c"),
            {"c": campaign.id},
        )
    assert counted == 1


async def test_unsubscribe_with_a_forged_token_is_a_404(
    client: httpx.AsyncClient, signer: TokenSigner, campaign: SentCampaign
) -> None:
    for token in forgeries(signer, campaign.delivery_ids[0]):
        if not token:
            continue
        response = await client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 404
    click = signer.sign(Kind.CLICK, campaign.delivery_ids[0], 0)
    assert (await client.post(f"/u/{click}")).status_code == 404


async def test_pixel_and_click_are_answered_in_front_of_the_application_stack(
    migrated: Settings, app: FastAPI, signer: TokenSigner, campaign: SentCampaign
) -> None:
    fresh = create_app(migrated)
    fresh.state.tracking = app.state.tracking
    entered: list[str] = []

    async def stack(scope: Any, receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    fresh.middleware_stack = stack
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fresh), base_url="http://test"
    ) as client:
        target = campaign.delivery_ids[3]
        pixel = await client.get(f"/o/{signer.sign(Kind.OPEN, target)}", headers=BROWSER)
        click = await client.get(f"/c/{signer.sign(Kind.CLICK, target, 0)}", headers=BROWSER)
        other = await client.get("/healthz")
    assert pixel.content == PIXEL and click.status_code == 302
    assert other.status_code == 204 and entered == ["/healthz"]


async def test_broker_outage_spools_events_and_replays_them(
    migrated: Settings,
    tmp_path: Any,
    campaign: SentCampaign,
    signer: TokenSigner,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from service.tracking.fastpath import TrackingHub

    down = migrated.model_copy(
        update={
            "kafka_bootstrap_servers": "127.0.0.1:1",
            "tracking_produce_timeout_ms": 300,
            "tracking_spool_dir": str(tmp_path),
        }
    )
    emitter = Emitter(down)
    target = campaign.delivery_ids[4]
    scope = {"method": "GET", "headers": [(b"user-agent", b"Mozilla/5.0 Chrome")], "client": None}
    hub = TrackingHub(down, None, emitter)  # type: ignore[arg-type]
    for _ in range(4):
        hub.emit("open", scope, target, 0)
    await eventually(lambda: _value(emitter.spool.size > 0), within=10)
    await asyncio.to_thread(emitter.close, 1)
    assert list(tmp_path.glob("*.spool"))

    back = Emitter(migrated.model_copy(update={"tracking_spool_dir": str(tmp_path)}))
    try:
        replayed = await asyncio.to_thread(back.replay)
        assert replayed == 4
        row = await eventually(
            lambda: _where(delivery(sessions, target), lambda r: r["open_count"] == 4)
        )
        assert row["first_opened_at"] is not None
        assert back.spool.size == 0 and not list(tmp_path.glob("*.spool"))
    finally:
        await asyncio.to_thread(back.close, 5)


async def _value(value: bool) -> bool:
    return value


async def _where(row_future: Any, predicate: Any) -> Any:
    row = await row_future
    return row if predicate(row) else None
