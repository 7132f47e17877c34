"""SendGrid's Signed Event Webhook: the vectors, every example event, the statuses they set."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.errors import InvalidSignature
from service.settings import Settings
from service.webhooks import sendgrid_events
from tests.conftest import SPEC_DIR, eventually
from tests.factories import SentCampaign, delivery, sent_campaign
from tests.fakes.sendgrid_server import PUBLIC_KEY, sign, wire_body

SPECS = SPEC_DIR / "sendgrid"
VECTORS = json.loads((SPECS / "vectors.json").read_text())
EXAMPLES = sorted((SPECS / "webhooks").glob("*.json"))
EXAMPLES = [p for p in EXAMPLES if p.name != "SOURCES.json"]
URL = "/api/v1/webhooks/sendgrid"

# What each example does to the delivery it is about (None: the status stays "sent").
EXPECTED_STATUS = {
    "processed": "sent",
    "delivered": "delivered",
    "deferred": "sent",
    "bounce": "bounced",
    "blocked": "failed",
    "dropped": "suppressed",  # reason "Bounced Address"
    "spamreport": "complained",
    "unsubscribe": "sent",
    "group_unsubscribe": "sent",
    "group_resubscribe": "sent",
    "open": "sent",
    "click": "sent",
    "click_unique_args": "sent",
}


def _bytes(case: dict[str, Any]) -> bytes:
    return base64.b64decode(case["payload_base64"])


def _official() -> list[dict[str, Any]]:
    return list(VECTORS["official"]["cases"])


def _generated() -> list[dict[str, Any]]:
    default = VECTORS["generated"]["public_key"]
    return [{"public_key": default, **case} for case in VECTORS["generated"]["cases"]]


@pytest.mark.parametrize("case", _official() + _generated(), ids=lambda c: c["name"])
def test_signatures_pass_and_fail_as_the_vectors_say(case: dict[str, Any]) -> None:
    key = sendgrid_events.public_key(case["public_key"])
    headers = {
        sendgrid_events.SIGNATURE_HEADER: case["signature"],
        sendgrid_events.TIMESTAMP_HEADER: case["timestamp"],
    }
    if case["expected"]:
        sendgrid_events.verify(key, headers, _bytes(case))
    else:
        with pytest.raises(InvalidSignature):
            sendgrid_events.verify(key, headers, _bytes(case))


def test_every_example_payload_verifies_with_its_generated_signature() -> None:
    key = sendgrid_events.public_key(VECTORS["generated"]["public_key"])
    examples = VECTORS["generated"]["webhook_examples"]["files"]
    assert set(examples) == {p.name for p in EXAMPLES}
    for case in examples.values():
        body = case["payload"].encode()
        headers = {
            sendgrid_events.SIGNATURE_HEADER: case["signature"],
            sendgrid_events.TIMESTAMP_HEADER: str(case["timestamp"]),
        }
        sendgrid_events.verify(key, headers, body)
        with pytest.raises(InvalidSignature):
            sendgrid_events.verify(key, headers, body + b" ")


def test_a_timestamp_outside_the_tolerance_is_refused() -> None:
    key = sendgrid_events.public_key(PUBLIC_KEY)
    body = b"[]\r\n"
    stale = sign(body, int(time.time()) - 700)
    with pytest.raises(InvalidSignature, match="tolerance"):
        sendgrid_events.verify(key, stale, body, tolerance=600)
    sendgrid_events.verify(key, sign(body), body, tolerance=600)


def test_a_pem_public_key_is_accepted_and_a_broken_one_is_not() -> None:
    pem = f"-----BEGIN PUBLIC KEY-----\n{PUBLIC_KEY}\n-----END PUBLIC KEY-----"
    body = b"[]"
    sendgrid_events.verify(sendgrid_events.public_key(pem), sign(body), body)
    with pytest.raises(InvalidSignature):
        sendgrid_events.public_key("not base64!")


# -- the endpoint ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sendgrid_app(migrated: Settings) -> AsyncIterator[FastAPI]:
    """The app with a SendGrid key; it produces to the session's topics, for its workers."""
    settings = migrated.model_copy(update={"sendgrid_webhook_public_key": PUBLIC_KEY})
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def sg_client(sendgrid_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sendgrid_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def events_about(name: str, campaign: SentCampaign, i: int) -> list[dict[str, Any]]:
    """An example's events about recipient ``i``'s message: its custom args, fresh event ids."""
    events: list[dict[str, Any]] = json.loads((SPECS / "webhooks" / f"{name}.json").read_text())
    for event in events:
        # The docs' examples share ids; SendGrid's are unique per event.
        event["sg_event_id"] = f"{name}-{uuid.uuid4().hex}"
        if "email" in event:
            event["email"] = campaign.emails[i]
            event.update(campaign.tags(i))
    return events


async def test_unsigned_badly_signed_or_stale_posts_are_refused(
    sg_client: httpx.AsyncClient,
) -> None:
    body = (SPECS / "webhooks" / "delivered.json").read_bytes()
    assert (await sg_client.post(URL, content=body)).status_code == 401
    other = sign(body + b" ")  # a signature of other bytes
    response = await sg_client.post(URL, content=body, headers=other)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    stale = sign(body, int(time.time()) - 3600)
    assert (await sg_client.post(URL, content=body, headers=stale)).status_code == 401


async def test_without_a_public_key_webhooks_answer_503_so_sendgrid_retries(
    client: httpx.AsyncClient,
) -> None:
    body = b"[]"
    response = await client.post(URL, content=body, headers=sign(body))
    assert response.status_code == 503


async def test_a_signed_body_that_is_no_array_is_a_400(sg_client: httpx.AsyncClient) -> None:
    body = b'{"event": "delivered"}'
    response = await sg_client.post(URL, content=body, headers=sign(body))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook"


@pytest.fixture
async def campaign(sessions: async_sessionmaker[AsyncSession], sponsor: str) -> SentCampaign:
    return await sent_campaign(sessions, sponsor, len(EXAMPLES))


@pytest.mark.usefixtures("workers")
async def test_every_example_event_is_accepted_and_moves_its_delivery(
    sg_client: httpx.AsyncClient, campaign: SentCampaign, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ids: dict[str, list[str]] = {}
    about: dict[str, int] = {}
    for i, path in enumerate(EXAMPLES):
        events = events_about(path.stem, campaign, i)
        ids[path.stem] = [f"sendgrid:{e['sg_event_id']}" for e in events]
        about[path.stem] = i
        body = wire_body(events)
        response = await sg_client.post(URL, content=body, headers=sign(body))
        assert response.status_code == 200, (path.stem, response.text)
        assert response.json()["events"] == len(events)

    everything = [event_id for group in ids.values() for event_id in group]

    async def logged() -> dict[str, int | None] | None:
        async with sessions() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT event_id, delivery_id FROM delivery_events WHERE event_id = ANY(:e)"
                    ),
                    {"e": everything},
                )
            ).all()
        return {r.event_id: r.delivery_id for r in rows} if len(rows) == len(everything) else None

    found = await eventually(logged)
    for name, event_ids in ids.items():
        expected = None if name == "account_status_change" else campaign.delivery_ids[about[name]]
        assert {found[e] for e in event_ids} == {expected}, name

    statuses = {
        name: (await delivery(sessions, campaign.delivery_ids[about[name]]))
        for name in EXPECTED_STATUS
    }
    assert {name: row["status"] for name, row in statuses.items()} == EXPECTED_STATUS
    assert statuses["delivered"]["delivered_at"] is not None
    assert statuses["bounce"]["bounced_at"] is not None
    assert statuses["spamreport"]["complained_at"] is not None
    assert statuses["open"]["first_opened_at"] is not None
    assert statuses["click"]["first_clicked_at"] is not None
    assert "delivery delayed" in (statuses["deferred"]["last_error"] or "")
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT email, reason FROM suppressions WHERE sponsor_id = :s"),
            {"s": campaign.sponsor_id},
        )
        suppressed: dict[str, str] = {row.email: row.reason for row in rows}
    assert suppressed == {
        campaign.emails[about["bounce"]]: "hard_bounce",
        campaign.emails[about["dropped"]]: "hard_bounce",
        campaign.emails[about["spamreport"]]: "complaint",
    }


@pytest.mark.usefixtures("workers")
async def test_a_batch_posted_twice_is_logged_once(
    sg_client: httpx.AsyncClient, campaign: SentCampaign, sessions: async_sessionmaker[AsyncSession]
) -> None:
    events = events_about("open", campaign, 0) + events_about("click", campaign, 0)
    body = wire_body(events)
    for _ in range(2):
        assert (await sg_client.post(URL, content=body, headers=sign(body))).status_code == 200
    event_ids = [f"sendgrid:{e['sg_event_id']}" for e in events]

    async def logged() -> int | None:
        async with sessions() as session:
            count = await session.scalar(
                text("SELECT count(*) FROM delivery_events WHERE event_id = ANY(:e)"),
                {"e": event_ids},
            )
        return count if count == len(events) else None

    assert await eventually(logged) == 2
