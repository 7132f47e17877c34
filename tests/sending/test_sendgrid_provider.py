"""The SendGrid adapter against the fake SendGrid (spec-validated), and a campaign through it."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from service.errors import PermanentProviderError, RateLimited, TransientProviderError
from service.settings import Settings
from tests import factories
from tests.conftest import own_stack, provider_ids, run_campaign
from tests.fakes.sendgrid_server import FakeSendGrid
from worker.providers import build_provider
from worker.providers.base import OutgoingEmail
from worker.providers.sendgrid import SendGridProvider

KEY = "SG.test-key"
CAMPAIGN = str(uuid.UUID(int=11))
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://t.example/u/abc>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}
HTML = "<p>Hello {{{H0}}}, see {{{H1}}}</p>"
TEXT = "Hello {{{T0}}}"


def outgoing(i: int, **overrides: Any) -> OutgoingEmail:
    fields = {"delivery_id": 2000 + i, "headers": dict(UNSUBSCRIBE), **overrides}
    return factories.outgoing(i, CAMPAIGN, **fields)


def templated(i: int, template_id: str, **overrides: Any) -> OutgoingEmail:
    variables = {"H0": f"reader {i}", "H1": f"https://t.example/c/{i}", "T0": f"reader {i}"}
    return outgoing(i, html="", text="", template_id=template_id, variables=variables, **overrides)


@pytest.fixture(scope="module")
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(KEY) as fake:
        yield fake


@pytest.fixture
def fake(fake_sendgrid: FakeSendGrid) -> Iterator[FakeSendGrid]:
    fake_sendgrid.reset()
    yield fake_sendgrid
    fake_sendgrid.reset()


@pytest.fixture
async def provider(fake: FakeSendGrid) -> Any:
    sendgrid = SendGridProvider(KEY, fake.url)
    yield sendgrid
    await sendgrid.aclose()


async def test_a_templated_batch_is_one_request_with_substitutions_per_recipient(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    template_id = await provider.create_template("c", HTML, TEXT, ["H0", "H1", "T0"])
    emails = [templated(i, template_id) for i in range(5)]
    results = await provider.send_batch(emails, "key-1")

    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request["content"] == [
        {"type": "text/plain", "value": TEXT},
        {"type": "text/html", "value": HTML},
    ]
    assert request["categories"] == [CAMPAIGN]
    assert len(request["personalizations"]) == 5
    message_ids = {r.provider_message_id for r in results}
    assert len(message_ids) == 1 and None not in message_ids  # X-Message-Id, on every row
    first = fake.messages_to("reader1@example.org")[0]
    assert first.html == "<p>Hello reader 1, see https://t.example/c/1</p>"
    assert first.text == "Hello reader 1"
    assert first.subject == "Hello 1"
    assert first.sender == "News Desk <news@sponsor.example>"
    assert first.headers == UNSUBSCRIBE
    assert first.custom_args == {"delivery_id": "2001", "campaign_id": CAMPAIGN}


async def test_whole_bodies_go_one_request_per_recipient(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    emails = [outgoing(i, reply_to="desk@sponsor.example") for i in range(3)]
    results = await provider.send_batch(emails, "key-2")

    assert len(fake.requests) == 3
    assert [r.delivery_id for r in results] == [e.delivery_id for e in emails]
    assert len({r.provider_message_id for r in results}) == 3
    message = fake.messages_to("reader2@example.org")[0]
    assert (message.html, message.text) == ("<p>Hello reader 2</p>", "Hello reader 2")
    assert fake.requests[0]["reply_to"] == {"email": "desk@sponsor.example"}


async def test_variables_over_the_substitution_limit_send_that_recipient_whole(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    template_id = await provider.create_template("c", HTML, TEXT, ["H0", "H1", "T0"])
    big = templated(1, template_id)
    assert big.variables is not None
    big.variables["H0"] = "x" * 12_000
    await provider.send_batch([templated(0, template_id), big], "key-3")

    assert len(fake.requests) == 2
    assert fake.messages_to("reader1@example.org")[0].html.startswith("<p>Hello xxx")
    assert fake.messages_to("reader0@example.org")[0].html.startswith("<p>Hello reader 0")


async def test_a_batch_of_a_thousand_is_one_request(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    template_id = await provider.create_template("c", HTML, TEXT, ["H0", "H1", "T0"])
    results = await provider.send_batch([templated(i, template_id) for i in range(1000)], "k")
    assert len(fake.requests) == 1
    assert len(fake.messages) == 1000
    assert all(r.provider_message_id for r in results)


def test_the_batch_size_may_reach_sendgrids_maximum_but_not_resends() -> None:
    assert Settings(email_provider="sendgrid", provider_batch_size=1000).provider_batch_size == 1000
    with pytest.raises(ValueError, match="limit of 100"):
        Settings(email_provider="resend", provider_batch_size=101)


async def test_every_process_that_compiles_the_same_template_gets_the_same_id(
    fake: FakeSendGrid,
) -> None:
    one, other = SendGridProvider(KEY, fake.url), SendGridProvider(KEY, fake.url)
    try:
        made = await one.create_template("c", HTML, TEXT, ["H0", "H1", "T0"])
        assert other.adopt_template(HTML, TEXT, ["H0", "H1", "T0"]) == made
        assert other.adopt_template(HTML + " ", TEXT, ["H0", "H1", "T0"]) != made
        await other.send_batch([templated(0, made)], "key-4")
    finally:
        await one.aclose()
        await other.aclose()
    assert fake.messages_to("reader0@example.org")[0].text == "Hello reader 0"


async def test_a_rate_limit_carries_the_reset_time(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    fake.retry_in = 3
    fake.fail_next(1, 429)
    with pytest.raises(RateLimited) as raised:
        await provider.send_batch([outgoing(0)], "key-5")
    assert raised.value.retry_after is not None and 1 <= raised.value.retry_after <= 3
    fake.retry_in = 1.0


async def test_server_errors_and_timeouts_are_transient(fake: FakeSendGrid) -> None:
    provider = SendGridProvider(KEY, fake.url)
    fake.fail_next(1, 500)
    try:
        with pytest.raises(TransientProviderError) as raised:
            await provider.send_batch([outgoing(0)], "key-6")
        assert raised.value.status == 500
    finally:
        await provider.aclose()
    nowhere = SendGridProvider(KEY, "http://127.0.0.1:1", timeout=1)
    try:
        with pytest.raises(TransientProviderError):
            await nowhere.send_batch([outgoing(0)], "key-7")
    finally:
        await nowhere.aclose()


async def test_a_wrong_key_fails_the_whole_batch(fake: FakeSendGrid) -> None:
    provider = SendGridProvider("SG.wrong", fake.url)
    try:
        with pytest.raises(PermanentProviderError) as raised:
            await provider.send_batch([outgoing(0), outgoing(1)], "key-8")
    finally:
        await provider.aclose()
    assert raised.value.status == 401
    assert not fake.messages


async def test_a_refused_request_fails_its_recipients_with_sendgrids_message(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    bad = outgoing(1, to="not-an-address")
    results = await provider.send_batch([outgoing(0), bad], "key-9")
    assert results[0].provider_message_id and results[0].error is None
    assert results[1].provider_message_id is None
    assert results[1].error and "personalizations" in results[1].error


async def test_a_batch_retried_after_a_partial_failure_sends_each_recipient_once(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    emails = [outgoing(i) for i in range(4)]
    fake.fail_next(1, 503)
    with pytest.raises(TransientProviderError):
        await provider.send_batch(emails, "key-10")
    results = await provider.send_batch(emails, "key-10")
    assert all(r.provider_message_id for r in results)
    assert Counter(m.to for m in fake.messages) == {e.to: 1 for e in emails}


def test_build_provider_needs_a_key_and_builds_sendgrid() -> None:
    with pytest.raises(RuntimeError, match="SENDGRID_API_KEY"):
        build_provider(Settings(email_provider="sendgrid"))
    provider = build_provider(Settings(email_provider="sendgrid", sendgrid_api_key="SG.x"))
    assert provider.name == "sendgrid"
    asyncio.run(provider.aclose())


# -- a campaign over the real stack ---------------------------------------------------------


@pytest.fixture(scope="module")
def sendgrid_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_sendgrid: FakeSendGrid
) -> Iterator[Settings]:
    with own_stack(
        tmp_path_factory.mktemp("sendgrid-stack"),
        "sg",
        email_provider="sendgrid",
        sendgrid_api_key=KEY,
        sendgrid_api_url=fake_sendgrid.url,
        provider_batch_size=200,
        send_max_tries=5,
    ) as settings:
        yield settings


async def test_a_campaign_is_delivered_through_sendgrid_exactly_once(
    sendgrid_stack: Settings, fake: FakeSendGrid
) -> None:
    stats, campaign_id = await run_campaign(sendgrid_stack, 450)

    assert (stats["sent"], stats["failed"], stats["pending"]) == (450, 0, 0)
    per_recipient = Counter(m.to for m in fake.messages)
    assert len(per_recipient) == 450 and set(per_recipient.values()) == {1}
    # The body once per request of up to PROVIDER_BATCH_SIZE recipients.
    assert len(fake.requests) == 3
    message = next(m for m in fake.messages if m.to.startswith("lead1@"))
    assert message.subject == "Hello Lead 1"
    assert message.custom_args["campaign_id"] == campaign_id
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "{{{" not in message.html + message.text
    ids = await provider_ids(sendgrid_stack, campaign_id)
    by_address = {m.to: m for m in fake.messages}
    assert {email: by_address[email].message_id for email in ids} == ids
    for email, message_id in ids.items():
        assert by_address[email].custom_args["delivery_id"]
        assert message_id


async def test_a_campaign_through_429_then_5xx_then_ok_sends_each_recipient_once(
    sendgrid_stack: Settings, fake: FakeSendGrid
) -> None:
    fake.fail_next(1, 429)
    fake.fail_next(1, 503)
    stats, _ = await run_campaign(sendgrid_stack, 120)

    assert (stats["sent"], stats["failed"], stats["pending"]) == (120, 0, 0)
    assert fake.answered.get(429) == 1 and fake.answered.get(503) == 1
    per_recipient = Counter(m.to for m in fake.messages)
    assert len(per_recipient) == 120 and set(per_recipient.values()) == {1}
