"""The Mailgun provider against the fake Mailgun API, and campaigns sent through it."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from service.errors import (
    PermanentProviderError,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from service.settings import Settings
from tests import factories
from tests.conftest import own_stack, provider_ids, run_campaign
from tests.fakes.mailgun_server import FakeMailgun
from worker.providers import build_provider
from worker.providers.base import OutgoingEmail
from worker.providers.mailgun import MailgunProvider

KEY = "key-test-0123456789"
DOMAIN = "mg.sponsor.example"
CAMPAIGN = str(uuid.UUID(int=9))


def outgoing(i: int, **overrides: Any) -> OutgoingEmail:
    headers = {
        "List-Unsubscribe": f"<https://t.example/u/{i}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    fields = {"delivery_id": 2000 + i, "headers": headers, **overrides}
    return factories.outgoing(i, CAMPAIGN, **fields)


def templated(i: int) -> OutgoingEmail:
    return outgoing(
        i,
        html="",
        text="",
        subject="Hello",
        template_id="mailgun-batch:x",
        template_parts=("<p>Hi {{{H0}}}</p><img src={{{H1}}}>", "Hi {{{T0}}}"),
        variables={"H0": f"Reader {i}", "H1": f"https://t.example/o/{i}", "T0": f"Reader {i}"},
    )


@pytest.fixture(scope="module")
def server() -> Iterator[FakeMailgun]:
    with FakeMailgun(KEY) as fake:
        yield fake


@pytest.fixture
async def provider(server: FakeMailgun) -> AsyncIterator[MailgunProvider]:
    server.reset()
    server.retry_after = None
    mailgun = MailgunProvider(KEY, DOMAIN, api_url=server.url)
    yield mailgun
    await mailgun.aclose()


async def test_a_batch_is_one_request_with_each_recipients_own_values(
    provider: MailgunProvider, server: FakeMailgun
) -> None:
    results = await provider.send_batch([outgoing(i) for i in range(5)], "k-one")

    assert len(server.requests) == 1
    message_id = server.requests[0].id.strip("<>")
    assert [r.provider_message_id for r in results] == [message_id] * 5
    for i in range(5):
        (message,) = server.messages_to(f"reader{i}@example.org")
        assert (message.subject, message.html, message.text) == (
            f"Hello {i}",
            f"<p>Hello reader {i}</p>",
            f"Hello reader {i}",
        )
        assert message.headers["List-Unsubscribe"] == f"<https://t.example/u/{i}>"
        assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message.variables == {"campaign_id": CAMPAIGN, "delivery_id": str(2000 + i)}
        assert message.tags == [CAMPAIGN]


async def test_one_to_one_messages_share_one_tag_and_keep_their_own_id_for_webhooks(
    provider: MailgunProvider, server: FakeMailgun
) -> None:
    message_tag = f"message-{uuid.uuid4()}"
    await provider.send_batch([factories.outgoing(0, message_tag, delivery_id=0)], "k-message")

    (message,) = server.messages_to("reader0@example.org")
    assert message.tags == ["messages"]
    assert message.variables["campaign_id"] == message_tag


async def test_a_template_body_goes_once_per_request_with_only_the_values_per_recipient(
    provider: MailgunProvider, server: FakeMailgun
) -> None:
    await provider.send_batch([templated(i) for i in range(3)], "k-template")

    (request,) = server.requests
    form = dict(request.fields)
    assert form["html"] == "<p>Hi %recipient.H0%</p><img src=%recipient.H1%>"
    assert form["subject"] == "Hello"  # the same for all: sent once, not as a value
    values = json.loads(form["recipient-variables"])
    assert values["reader1@example.org"]["H0"] == "Reader 1"
    assert "_html" not in values["reader1@example.org"]
    (message,) = server.messages_to("reader2@example.org")
    assert message.html == "<p>Hi Reader 2</p><img src=https://t.example/o/2>"
    assert message.text == "Hi Reader 2"


async def test_the_same_address_twice_goes_in_two_requests(
    provider: MailgunProvider, server: FakeMailgun
) -> None:
    twice = [outgoing(0), outgoing(1, to="reader0@example.org")]
    results = await provider.send_batch(twice, "k-twice")
    assert len(server.requests) == 2
    assert len(server.messages_to("reader0@example.org")) == 2
    assert results[0].provider_message_id != results[1].provider_message_id


async def test_a_retry_with_the_same_key_sends_only_what_was_not_accepted(
    provider: MailgunProvider, server: FakeMailgun
) -> None:
    emails = [outgoing(0), outgoing(1, to="reader0@example.org")]  # two requests
    server.fail_next(1, 503, after=1)
    with pytest.raises(TransientProviderError):
        await provider.send_batch(emails, "k-retry")
    assert len(server.requests) == 1
    await provider.send_batch(emails, "k-retry")
    assert len(server.requests) == 2
    assert len(server.messages_to("reader0@example.org")) == 2  # one per delivery, not three


async def test_a_429_is_rate_limited_with_the_providers_wait(
    provider: MailgunProvider, server: FakeMailgun
) -> None:
    server.retry_after = 7
    server.fail_next(1, 429)
    with pytest.raises(RateLimited) as caught:
        await provider.send_batch([outgoing(0)], "k-429")
    assert caught.value.retry_after == 7


async def test_a_429_without_retry_after_waits_until_the_reset(
    provider: MailgunProvider, server: FakeMailgun
) -> None:
    server.fail_next(1, 429)  # X-RateLimit-Reset in epoch milliseconds, one second ahead
    with pytest.raises(RateLimited) as caught:
        await provider.send_batch([outgoing(0)], "k-429-reset")
    assert caught.value.retry_after is not None
    assert 0 <= caught.value.retry_after <= 1.5


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_is_transient(
    provider: MailgunProvider, server: FakeMailgun, status: int
) -> None:
    server.fail_next(1, status)
    with pytest.raises(TransientProviderError) as caught:
        await provider.send_batch([outgoing(0)], f"k-{status}")
    assert caught.value.status == status
    assert not isinstance(caught.value, RateLimited)


async def test_a_wrong_key_is_permanent(server: FakeMailgun) -> None:
    wrong = MailgunProvider("key-wrong", DOMAIN, api_url=server.url)
    try:
        with pytest.raises(PermanentProviderError) as caught:
            await wrong.send_batch([outgoing(0)], "k-401")
    finally:
        await wrong.aclose()
    assert caught.value.status == 401


async def test_a_form_the_spec_refuses_is_permanent(
    provider: MailgunProvider, server: FakeMailgun
) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        await provider.send_batch([outgoing(0, html="", text="")], "k-400")
    assert caught.value.status == 400
    assert "Need at least one of" in caught.value.message
    assert server.requests == []


def test_a_quota_answer_is_quota_exceeded() -> None:
    from worker.providers.mailgun import _map_error

    answer = httpx.Response(
        400, json={"message": "Domain is not allowed to send: monthly limit exceeded"}
    )
    assert isinstance(_map_error(answer), QuotaExceeded)


async def test_a_server_that_is_down_is_transient() -> None:
    down = MailgunProvider(KEY, DOMAIN, api_url="http://127.0.0.1:9", timeout=2)
    try:
        with pytest.raises(TransientProviderError):
            await down.send_batch([outgoing(0)], "k-down")
    finally:
        await down.aclose()


def test_the_region_picks_the_api_host() -> None:
    assert MailgunProvider(KEY, DOMAIN).url == f"https://api.mailgun.net/v3/{DOMAIN}/messages"
    eu = MailgunProvider(KEY, DOMAIN, region="eu")
    assert eu.url == f"https://api.eu.mailgun.net/v3/{DOMAIN}/messages"
    with pytest.raises(ValueError):
        MailgunProvider(KEY, DOMAIN, region="ap")


def test_the_batch_size_may_reach_each_providers_own_limit() -> None:
    assert Settings(email_provider="mailgun", provider_batch_size=1000).provider_batch_size == 1000
    with pytest.raises(ValidationError):
        Settings(email_provider="mailgun", provider_batch_size=1001)
    with pytest.raises(ValidationError):
        Settings(email_provider="resend", provider_batch_size=101)


def test_build_provider_needs_the_key_and_the_domain() -> None:
    with pytest.raises(RuntimeError, match="MAILGUN_API_KEY"):
        build_provider(Settings(email_provider="mailgun"))


# -- campaigns over the real stack ----------------------------------------------------------


@pytest.fixture(scope="module")
def mailgun_stack(
    tmp_path_factory: pytest.TempPathFactory, server: FakeMailgun
) -> Iterator[Settings]:
    with own_stack(
        tmp_path_factory.mktemp("mailgun-stack"),
        "mailgun",
        email_provider="mailgun",
        mailgun_api_key=SecretStr(KEY),
        mailgun_domain=DOMAIN,
        mailgun_api_url=server.url,
        provider_batch_size=1000,
        send_retry_base_seconds=0.2,
    ) as settings:
        yield settings


async def send_campaign(settings: Settings, n: int, body: dict[str, Any]) -> str:
    """A campaign to ``n`` new leads, sent in full; its id."""
    stats, campaign_id = await run_campaign(settings, n, body)
    assert (stats["sent"], stats["failed"], stats["pending"]) == (n, 0, 0)
    return campaign_id


def one_each(server: FakeMailgun, ids: dict[str, str | None]) -> None:
    per_recipient = Counter(m.to for m in server.messages)
    assert set(per_recipient) == set(ids)
    assert set(per_recipient.values()) == {1}
    for message in server.messages:
        assert ids[message.to] == message.id  # the request's id, recorded on its rows


async def test_a_campaign_is_delivered_through_mailgun_once_per_recipient(
    mailgun_stack: Settings, server: FakeMailgun
) -> None:
    server.reset()
    campaign_id = await send_campaign(mailgun_stack, 450, factories.campaign())

    ids = await provider_ids(mailgun_stack, campaign_id)
    assert len(ids) == 450
    one_each(server, ids)
    message = next(m for m in server.messages if m.to.startswith("lead1@"))
    assert message.subject == "Hello Lead 1"
    assert message.headers["List-Unsubscribe"].startswith("<https://campaigns.example.com/")
    assert message.variables["campaign_id"] == campaign_id
    assert len(server.requests) < 450  # batch sending, not a request per message


async def test_a_campaign_without_per_recipient_jinja_sends_its_body_once_per_request(
    mailgun_stack: Settings, server: FakeMailgun
) -> None:
    server.reset()
    body = factories.campaign(message_body="Hi {{ name }},\n\nwelcome.")
    campaign_id = await send_campaign(mailgun_stack, 120, body)

    one_each(server, await provider_ids(mailgun_stack, campaign_id))
    for request in server.requests:
        form = dict(request.fields)
        assert "%recipient.H" in form["html"]
        assert "_html" not in form["recipient-variables"]
    message = next(m for m in server.messages if m.to.startswith("lead2@"))
    assert "Hi Lead 2," in (message.html or "")


async def test_a_429_then_a_5xx_then_ok_still_sends_each_recipient_once(
    mailgun_stack: Settings, server: FakeMailgun
) -> None:
    server.reset()
    server.retry_after = 0
    server.fail_next(1, 429)
    server.fail_next(1, 500)
    campaign_id = await send_campaign(mailgun_stack, 60, factories.campaign())

    one_each(server, await provider_ids(mailgun_stack, campaign_id))
    assert server.state.faults == []  # both faults were answered, then the retries went through
    assert server.stats()["refused"] == 0
