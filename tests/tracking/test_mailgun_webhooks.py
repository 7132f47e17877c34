"""Mailgun webhooks: signature vectors, every example event, replays, and the ingester."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import kafka
from service.errors import InvalidSignature
from service.settings import Settings
from service.webhooks import mailgun
from tests.conftest import SPEC_DIR, eventually
from tests.factories import SentCampaign, delivery, sent_campaign

VECTORS = json.loads((SPEC_DIR / "mailgun" / "vectors.json").read_text())
KEY = VECTORS["generated"]["signing_key"]
EXAMPLES = sorted(
    p for p in (SPEC_DIR / "mailgun" / "webhooks").glob("*.json") if p.stem != "SOURCES"
)
# The bodies as published, read once (the async tests do no file I/O).
PUBLISHED = {p.stem: p.read_text() for p in EXAMPLES}
URL = "/api/v1/webhooks/mailgun"
WINDOW = 300

# What each example does to its delivery: (status, suppression reason or None).
OUTCOME = {
    "accepted": ("sent", None),
    "delivered": ("delivered", None),
    "opened": ("sent", None),
    "clicked": ("sent", None),
    "complained": ("complained", "complaint"),
    "unsubscribed": ("sent", "unsubscribed"),
    "failed-permanent": ("bounced", "hard_bounce"),
    "failed-permanent-suppress-bounce": ("suppressed", "hard_bounce"),
    "failed-temporary": ("sent", None),
}


def _cases() -> list[dict[str, Any]]:
    official = VECTORS["official"]
    cases = [{**c, "key": official["signing_key"]} for c in official["cases"]]
    cases += [{**c, "key": c["signing_key"]} for c in official["other_sdk_derived"]]
    cases += [{**c, "key": KEY} for c in VECTORS["generated"]["cases"]]
    return cases


def _body(case: dict[str, Any]) -> dict[str, Any]:
    block = {k: case[k] for k in ("timestamp", "token", "signature")}
    return {"signature": block, "event-data": {}}


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"] if "name" in c else c["source"])
def test_signatures_pass_and_fail_as_the_vectors_say(case: dict[str, Any]) -> None:
    now = float(case["timestamp"])
    if case["expected"]:
        assert mailgun.verify(case["key"], _body(case), WINDOW, now=now) == case["token"]
    else:
        with pytest.raises(InvalidSignature):
            mailgun.verify(case["key"], _body(case), WINDOW, now=now)


def test_a_stale_timestamp_is_refused_though_its_hmac_is_valid() -> None:
    case = VECTORS["generated"]["replay_policy_case"]
    assert mailgun.sign(KEY, case["timestamp"], case["token"]) == case["signature"]
    with pytest.raises(InvalidSignature, match="window"):
        mailgun.verify(KEY, _body({**case}), WINDOW, now=time.time())
    assert mailgun.verify(KEY, _body(case), WINDOW, now=float(case["timestamp"]) + WINDOW)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_signed_as_mailgun_signs(path: Path) -> None:
    payload = json.loads(path.read_text())
    now = float(payload["signature"]["timestamp"])
    assert mailgun.verify(KEY, payload, WINDOW, now=now) == payload["signature"]["token"]
    with pytest.raises(InvalidSignature):
        mailgun.verify("key-wrong", payload, WINDOW, now=now)


@pytest.mark.parametrize(
    ("name", "kind", "bounce_type"),
    [
        ("accepted", "sent", None),
        ("delivered", "delivered", None),
        ("opened", "opened", None),
        ("clicked", "clicked", None),
        ("complained", "complained", None),
        ("unsubscribed", "unsubscribed", None),
        ("failed-permanent", "bounced", "Permanent"),
        ("failed-permanent-suppress-bounce", "suppressed", None),
        ("failed-temporary", "bounced", "Transient"),
    ],
)
def test_every_event_type_maps_to_the_statuses_resend_events_do(
    name: str, kind: str, bounce_type: str | None
) -> None:
    payload = json.loads((SPEC_DIR / "mailgun" / "webhooks" / f"{name}.json").read_text())
    event = mailgun.to_event(payload)
    assert (event.type, event.bounce_type, event.provider) == (kind, bounce_type, "mailgun")
    assert event.event_id == f"mailgun:{payload['event-data']['id']}"
    assert event.email_id == payload["event-data"]["message"]["headers"]["message-id"]


def test_a_failure_mailgun_gave_up_on_is_final() -> None:
    payload = example("failed-temporary")
    payload["event-data"]["reason"] = "old"
    assert mailgun.to_event(payload).type == "failed"


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(PUBLISHED[name])
    return loaded


def signed(payload: dict[str, Any], key: str = KEY, stamp: int | None = None) -> bytes:
    """``payload`` with a fresh signature block: a new token, now (or ``stamp``)."""
    timestamp = str(int(time.time()) if stamp is None else stamp)
    token = secrets.token_hex(25)
    payload["signature"] = {
        "timestamp": timestamp,
        "token": token,
        "signature": mailgun.sign(key, timestamp, token),
    }
    return json.dumps(payload).encode()


def about(payload: dict[str, Any], campaign: SentCampaign, i: int) -> dict[str, Any]:
    """The example as an event about recipient ``i``'s message, with an id of its own."""
    data = payload["event-data"]
    data["id"] = uuid.uuid4().hex
    data["user-variables"] = campaign.tags(i)
    data["message"] = {"headers": {"message-id": campaign.provider_ids[i]}}
    data["recipient"] = campaign.emails[i]
    data["timestamp"] = time.time()
    return payload


@pytest.fixture
def keyed(app: FastAPI, migrated: Settings) -> Iterator[Settings]:
    """The session's app, with a Mailgun signing key for the test."""
    settings = migrated.model_copy(update={"mailgun_webhook_signing_key": SecretStr(KEY)})
    app.state.settings = settings
    yield settings
    app.state.settings = migrated


@pytest.fixture
async def campaign(sessions: async_sessionmaker[AsyncSession], sponsor: str) -> SentCampaign:
    return await sent_campaign(sessions, sponsor, len(EXAMPLES))


@pytest.mark.usefixtures("keyed", "workers")
async def test_every_example_is_accepted_and_moves_its_delivery(
    client: httpx.AsyncClient, campaign: SentCampaign, sessions: async_sessionmaker[AsyncSession]
) -> None:
    names = [path.stem for path in EXAMPLES]
    for i, name in enumerate(names):
        response = await client.post(URL, content=signed(about(example(name), campaign, i)))
        assert response.status_code == 200, (name, response.text)

    async def logged() -> int | None:
        async with sessions() as session:
            count = await session.scalar(
                text("SELECT count(*) FROM delivery_events WHERE delivery_id = ANY(:d)"),
                {"d": campaign.delivery_ids},
            )
        return count if count == len(names) else None

    await eventually(logged)
    for i, name in enumerate(names):
        status, reason = OUTCOME[name]
        row = await delivery(sessions, campaign.delivery_ids[i])
        assert row["status"] == status, name
        async with sessions() as session:
            suppressed = await session.scalar(
                text("SELECT reason FROM suppressions WHERE sponsor_id = :s AND email = :e"),
                {"s": campaign.sponsor_id, "e": campaign.emails[i]},
            )
        assert suppressed == reason, name
    opened = await delivery(sessions, campaign.delivery_ids[names.index("opened")])
    assert opened["first_opened_at"] is not None


@pytest.mark.usefixtures("keyed")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
async def test_every_example_with_a_bad_signature_is_refused(
    client: httpx.AsyncClient, path: Path
) -> None:
    body = signed(example(path.stem), key="key-not-the-signing-key")
    response = await client.post(URL, content=body)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"


@pytest.mark.usefixtures("keyed")
async def test_an_example_as_published_is_refused_as_stale(client: httpx.AsyncClient) -> None:
    # Signed correctly, but its timestamp is months old.
    response = await client.post(
        URL, content=(SPEC_DIR / "mailgun/webhooks/opened.json").read_bytes()
    )
    assert response.status_code == 401
    assert "window" in response.json()["error"]["message"]


@pytest.mark.usefixtures("keyed")
async def test_a_replayed_token_is_refused(client: httpx.AsyncClient) -> None:
    payload = example("delivered")
    payload["event-data"]["id"] = uuid.uuid4().hex
    body = signed(payload)
    assert (await client.post(URL, content=body)).status_code == 200
    again = await client.post(URL, content=body)
    assert again.status_code == 406  # the one answer Mailgun does not retry
    assert again.json()["error"]["code"] == "replayed"


async def test_without_a_signing_key_nothing_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, content=signed(example("delivered")))
    assert response.status_code == 503


@pytest.mark.usefixtures("keyed")
async def test_a_broker_outage_is_a_503_and_the_retry_with_the_same_token_is_taken(
    app: FastAPI, client: httpx.AsyncClient, migrated: Settings
) -> None:
    payload = example("delivered")
    payload["event-data"]["id"] = uuid.uuid4().hex
    body = signed(payload)
    down = migrated.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    real = app.state.producer
    app.state.producer = kafka.Producer(down, **{"message.timeout.ms": 500})
    try:
        response = await client.post(URL, content=body)
    finally:
        broken, app.state.producer = app.state.producer, real
        broken.close(timeout=0.1)
    assert response.status_code == 503
    assert (await client.post(URL, content=body)).status_code == 200


def test_every_event_type_has_an_example() -> None:
    assert {p.stem for p in EXAMPLES} == set(OUTCOME)
