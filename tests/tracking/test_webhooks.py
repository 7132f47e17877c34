"""Resend webhooks: Svix signatures, every event type, duplicates, reordering, outages."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import kafka
from service.errors import InvalidSignature
from service.settings import Settings
from service.webhooks import svix
from tests.conftest import SPEC_DIR, WEBHOOK_SECRET, eventually
from tests.factories import SentCampaign, delivery, sent_campaign

VECTORS = json.loads((SPEC_DIR / "svix" / "vectors.json").read_text())
EXAMPLES = sorted((SPEC_DIR / "resend" / "webhooks").glob("email.*.json"))


def _payload(case: dict[str, Any]) -> str:
    if "payload" in case:
        return str(case["payload"])
    generator = case["payload_generator"]
    return str(generator["char"]) * int(generator["repeat"])


@pytest.mark.parametrize(
    "vector", VECTORS["official_vectors"] + VECTORS["derived_vectors"], ids=lambda v: v["name"]
)
def test_signatures_match_the_svix_vectors(vector: dict[str, Any]) -> None:
    signature = svix.sign(
        vector["secret"], vector["msg_id"], vector["timestamp"], _payload(vector).encode()
    )
    assert signature == vector["expected_signature"]


@pytest.mark.parametrize("case", VECTORS["verification_cases"], ids=lambda c: c["name"])
def test_verification_follows_the_svix_cases(case: dict[str, Any]) -> None:
    body = _payload(case).encode()
    if str(case["expect"]).startswith("valid"):
        assert svix.verify(case["secret"], case["headers"], body, now=case["now"])
    else:
        with pytest.raises(InvalidSignature):
            svix.verify(case["secret"], case["headers"], body, now=case["now"])


def signed(body: bytes, msg_id: str | None = None, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time())
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(stamp),
        "svix-signature": svix.sign(secret, msg_id, stamp, body),
        "content-type": "application/json",
    }


def example(name: str, email_id: str | None = None, **data: Any) -> bytes:
    payload = json.loads((SPEC_DIR / "resend" / "webhooks" / f"email.{name}.json").read_text())
    if email_id is not None:
        payload["data"]["email_id"] = email_id
    payload["data"].update(data)
    return json.dumps(payload).encode()


def about(campaign: SentCampaign, i: int) -> dict[str, Any]:
    """What Resend's events about recipient ``i``'s message carry: its id and its tags."""
    return {"email_id": campaign.provider_ids[i], "tags": campaign.tags(i)}


async def post(client: httpx.AsyncClient, body: bytes, msg_id: str | None = None) -> httpx.Response:
    return await client.post("/api/v1/webhooks/resend", content=body, headers=signed(body, msg_id))


@pytest.fixture
async def campaign(sessions: async_sessionmaker[AsyncSession], sponsor: str) -> SentCampaign:
    return await sent_campaign(sessions, sponsor, 12)


async def test_unsigned_or_badly_signed_webhooks_are_refused(client: httpx.AsyncClient) -> None:
    body = example("delivered")
    assert (await client.post("/api/v1/webhooks/resend", content=body)).status_code == 401
    wrong = signed(body, secret="whsec_" + "QUJD" * 8)
    response = await client.post("/api/v1/webhooks/resend", content=body, headers=wrong)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    stale = signed(body)
    stale["svix-timestamp"] = str(int(time.time()) - 400)
    assert (
        await client.post("/api/v1/webhooks/resend", content=body, headers=stale)
    ).status_code == 401


@pytest.mark.usefixtures("workers")
async def test_every_documented_event_type_is_accepted_and_logged(
    client: httpx.AsyncClient, campaign: SentCampaign, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ids = []
    for i, path in enumerate(EXAMPLES):
        name = path.stem.removeprefix("email.")
        msg_id = f"msg_{uuid.uuid4().hex}"
        ids.append(f"resend:{msg_id}")
        response = await post(client, example(name, **about(campaign, i)), msg_id)
        assert response.status_code == 200, (name, response.text)

    async def logged() -> int | None:
        async with sessions() as session:
            count = await session.scalar(
                text("SELECT count(*) FROM delivery_events WHERE event_id = ANY(:ids)"),
                {"ids": ids},
            )
        return count if count == len(EXAMPLES) else None

    await eventually(logged)


@pytest.mark.usefixtures("workers")
async def test_events_find_their_delivery_by_its_tag_when_tags_and_email_id_agree(
    client: httpx.AsyncClient, campaign: SentCampaign, sessions: async_sessionmaker[AsyncSession]
) -> None:
    other_campaign = {**campaign.tags(1), "campaign_id": str(uuid.uuid4())}
    bodies = [
        example("delivered", **about(campaign, 0)),
        # Recipient 1's tags, recipient 2's message: not trusted.
        example("delivered", email_id=campaign.provider_ids[2], tags=campaign.tags(1)),
        example("delivered", email_id=campaign.provider_ids[1], tags=other_campaign),
        # The spec's example tags only: no delivery to find.
        example("delivered", campaign.provider_ids[3]),
    ]
    msg_ids = [f"msg_{uuid.uuid4().hex}" for _ in bodies]
    for body, msg_id in zip(bodies, msg_ids, strict=True):
        assert (await post(client, body, msg_id)).status_code == 200

    async def logged() -> list[int | None] | None:
        async with sessions() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT event_id, delivery_id FROM delivery_events WHERE event_id = ANY(:e)"
                    ),
                    {"e": [f"resend:{m}" for m in msg_ids]},
                )
            ).all()
        found: dict[str, int | None] = {row.event_id: row.delivery_id for row in rows}
        return [found[f"resend:{m}"] for m in msg_ids] if len(found) == len(msg_ids) else None

    assert await eventually(logged) == [campaign.delivery_ids[0], None, None, None]
    rows = [await delivery(sessions, d) for d in campaign.delivery_ids[:4]]
    assert [row["status"] for row in rows] == ["delivered", "sent", "sent", "sent"]
    assert rows[0]["delivered_at"] is not None


@pytest.mark.usefixtures("workers")
async def test_a_duplicated_webhook_counts_once(
    client: httpx.AsyncClient, campaign: SentCampaign, sessions: async_sessionmaker[AsyncSession]
) -> None:
    body = example("delivered", **about(campaign, 2))
    msg_id = f"msg_{uuid.uuid4().hex}"
    for _ in range(3):
        assert (await post(client, body, msg_id)).status_code == 200
    # Another API replica has not seen it: the ingester dedupes by event id.
    await post(client, body, msg_id)

    async def delivered_count() -> int | None:
        async with sessions() as session:
            count = await session.scalar(
                text("SELECT sum(delivered) FROM campaign_stats WHERE campaign_id = :c"),
                {"c": campaign.id},
            )
        return int(count) if count else None

    assert await eventually(delivered_count) == 1
    async with sessions() as session:
        logged = await session.scalar(
            text("SELECT count(*) FROM delivery_events WHERE event_id = :e"),
            {"e": f"resend:{msg_id}"},
        )
    assert logged == 1


@pytest.mark.usefixtures("workers")
async def test_reordered_webhooks_end_in_the_right_state(
    client: httpx.AsyncClient, campaign: SentCampaign, sessions: async_sessionmaker[AsyncSession]
) -> None:
    target = campaign.delivery_ids[3]
    # Opened and complained arrive before delivered; delivered last must not move it back.
    await post(client, example("opened", **about(campaign, 3), created_at="2024-11-22T23:45:00Z"))
    await post(client, example("complained", **about(campaign, 3)))
    await post(client, example("delivered", **about(campaign, 3)))

    async def settled() -> dict[str, Any] | None:
        row = await delivery(sessions, target)
        done = row["delivered_at"] and row["complained_at"] and row["first_opened_at"]
        return row if done else None

    row = await eventually(settled)
    assert row["status"] == "complained"
    async with sessions() as session:
        reason = await session.scalar(
            text("SELECT reason FROM suppressions WHERE sponsor_id = :s AND email = :e"),
            {"s": campaign.sponsor_id, "e": campaign.emails[3]},
        )
    assert reason == "complaint"


async def test_a_broker_outage_is_a_503_so_the_provider_retries(
    app: FastAPI, client: httpx.AsyncClient, migrated: Settings
) -> None:
    down = migrated.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    real = app.state.producer
    app.state.producer = kafka.Producer(down, **{"message.timeout.ms": 500})
    try:
        response = await post(client, example("delivered"))
    finally:
        broken, app.state.producer = app.state.producer, real
        broken.close(timeout=0.1)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "temporarily_unavailable"


def test_every_example_has_a_file() -> None:
    names = {Path(p).stem for p in EXAMPLES}
    assert {"email.bounced", "email.complained", "email.delivered", "email.opened"} <= names
    assert len(names) == 11
