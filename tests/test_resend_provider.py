"""ResendProvider against the fake Resend API (tests/fakes/resend_server.py).

No database or Kafka: each test starts its own fake on a free port, so faults
and hung requests never leak into the next test.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest.mock import ANY

import httpx
import jsonschema
import orjson
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from service.errors import (
    PermanentProviderError,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from tests.fakes.resend_server import FakeResend, _compile, load_spec, request_schema
from worker.providers.base import OutgoingEmail, SendResult
from worker.providers.resend import ResendProvider, _results

API_KEY = "re_test_key"
CAMPAIGN_ID = str(uuid.uuid4())
MINIMAL = {"from": "a@b.c", "to": "x@y.z", "subject": "s"}  # the spec's required fields


def make_email(delivery_id: int, to: str | None = None, **extra: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "html": f"<p>Hello {delivery_id}</p>",
        "text": f"Hello {delivery_id}",
        **extra,
    }
    return OutgoingEmail(
        delivery_id=delivery_id,
        campaign_id=CAMPAIGN_ID,
        sender="Acme News <news@acme.example>",
        to=to or f"user{delivery_id}@example.com",
        subject=f"Hello {delivery_id}",
        **fields,
    )


@pytest.fixture
def fake() -> Iterator[FakeResend]:
    server = FakeResend().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def provider(fake: FakeResend) -> AsyncIterator[ResendProvider]:
    adapter = ResendProvider(api_key=API_KEY, api_url=fake.url, timeout=5.0)
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def test_bodies_already_encoded_as_json_are_sent_as_they_are(
    fake: FakeResend, provider: ResendProvider
) -> None:
    html, text = '<p class="x">Grüße & "quotes" \\ </p>', "Line one\nLine two \u00b7"
    encoded = make_email(
        1, html="", text="", html_json=orjson.dumps(html), text_json=orjson.dumps(text)
    )
    no_text = make_email(2, html="", text="", html_json=orjson.dumps(html), text_json=b'""')

    await provider.send_batch([encoded, no_text], idempotency_key="batch-json")

    first, second = fake.messages
    assert (first.html, first.text) == (html, text)
    assert (second.html, second.text) == (html, None)


async def test_batch_returns_ids_in_order_with_campaign_and_delivery_tags(
    fake: FakeResend, provider: ResendProvider
) -> None:
    emails = [make_email(i) for i in (11, 12, 13)]

    results = await provider.send_batch(emails, idempotency_key="batch-1")

    sent = fake.messages
    assert [r.delivery_id for r in results] == [11, 12, 13]
    assert [r.provider_message_id for r in results] == [m.id for m in sent]
    assert all(r.error is None for r in results)
    assert [m.to for m in sent] == [[e.to] for e in emails]
    assert [m.tag("campaign_id") for m in sent] == [CAMPAIGN_ID] * 3
    assert [m.tag("delivery_id") for m in sent] == ["11", "12", "13"]


async def test_a_sent_batch_is_freed_without_waiting_for_the_garbage_collector(
    fake: FakeResend, provider: ResendProvider
) -> None:
    # The response holds the request and its body (4 MB for a batch of 20 KB emails).
    responses: list[weakref.ref[httpx.Response]] = []

    async def keep(response: httpx.Response) -> None:
        responses.append(weakref.ref(response))

    for client in provider._http._clients:
        client.event_hooks["response"].append(keep)
    gc.disable()
    try:
        await provider.send_batch([make_email(1)], idempotency_key="freed")
        assert len(responses) == 1
        assert responses[0]() is None
    finally:
        gc.enable()


async def test_request_sent_by_sdk_validates_against_spec(
    fake: FakeResend, provider: ResendProvider
) -> None:
    email = make_email(1, reply_to="support@acme.example", headers={"X-Campaign": "c1"})

    await provider.send_batch([email], idempotency_key="spec-1")

    (request,) = fake.requests
    # Resolve the spec's own $refs with `referencing`, independently of the fake.
    registry: Registry[Any] = Registry().with_resource(
        "urn:resend", Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    )
    pointer = "/paths/~1emails~1batch/post/requestBody/content/application~1json/schema"
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"urn:resend#{pointer}"}, registry=registry
    )
    assert list(validator.iter_errors(request.body)) == []
    assert request.path == "/emails/batch"
    assert request.idempotency_key == "spec-1"
    assert request.batch_validation == "permissive"
    assert request.body[0]["reply_to"] == "support@acme.example"
    assert request.body[0]["headers"] == {"X-Campaign": "c1"}


async def test_same_idempotency_key_twice_sends_once(
    fake: FakeResend, provider: ResendProvider
) -> None:
    emails = [make_email(i) for i in range(3)]

    first = await provider.send_batch(emails, idempotency_key="retry-me")
    second = await provider.send_batch(emails, idempotency_key="retry-me")

    assert second == first
    assert len(fake.messages) == 3
    assert fake.replays == 1


async def test_same_idempotency_key_with_other_emails_is_permanent(
    fake: FakeResend, provider: ResendProvider
) -> None:
    await provider.send_batch([make_email(1)], idempotency_key="reused")

    with pytest.raises(PermanentProviderError) as caught:
        await provider.send_batch([make_email(2)], idempotency_key="reused")

    assert caught.value.code == "invalid_idempotent_request"
    assert caught.value.status == 409


async def test_concurrent_request_with_same_key_is_transient(
    fake: FakeResend, provider: ResendProvider
) -> None:
    fake.set_latency(1.0)  # the second request must arrive while the first is held
    emails = [make_email(1)]

    outcomes = await asyncio.gather(
        provider.send_batch(emails, idempotency_key="in-flight"),
        provider.send_batch(emails, idempotency_key="in-flight"),
        return_exceptions=True,
    )

    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], TransientProviderError)
    assert errors[0].code == "concurrent_idempotent_requests"
    assert len(fake.messages) == 1


async def test_429_with_retry_after_raises_rate_limited(
    fake: FakeResend, provider: ResendProvider
) -> None:
    fake.fail_next(1, status=429, retry_after=7)

    with pytest.raises(RateLimited) as caught:
        await provider.send_batch([make_email(1)], idempotency_key="rl-1")

    assert caught.value.retry_after == 7.0
    assert fake.messages == []


async def test_429_without_retry_after_uses_ratelimit_reset(
    fake: FakeResend, provider: ResendProvider
) -> None:
    fake.fail_next(1, status=429)

    with pytest.raises(RateLimited) as caught:
        await provider.send_batch([make_email(1)], idempotency_key="rl-2")

    assert caught.value.retry_after == 1.0  # the fake's ratelimit-reset when unlimited


async def test_exceeding_the_configured_rate_raises_rate_limited(
    fake: FakeResend, provider: ResendProvider
) -> None:
    fake.set_rate_limit(1)
    await provider.send_batch([make_email(1)], idempotency_key="rate-1")

    with pytest.raises(RateLimited) as caught:
        await provider.send_batch([make_email(2)], idempotency_key="rate-2")

    assert caught.value.retry_after is not None and caught.value.retry_after >= 1.0
    assert [r.status for r in fake.requests] == [200, 429]


async def test_500_raises_transient(fake: FakeResend, provider: ResendProvider) -> None:
    fake.fail_next(1, status=500)

    with pytest.raises(TransientProviderError) as caught:
        await provider.send_batch([make_email(1)], idempotency_key="boom")

    assert not isinstance(caught.value, RateLimited)
    assert caught.value.status == 500


@pytest.mark.parametrize("name", ["daily_quota_exceeded", "monthly_quota_exceeded"])
async def test_quota_error_raises_quota_exceeded(
    fake: FakeResend, provider: ResendProvider, name: str
) -> None:
    fake.fail_next(1, status=429, retry_after=30, error_name=name)

    with pytest.raises(QuotaExceeded) as caught:
        await provider.send_batch([make_email(1)], idempotency_key="quota")

    assert caught.value.code == name


async def test_422_in_strict_mode_raises_permanent(fake: FakeResend) -> None:
    strict = ResendProvider(API_KEY, fake.url, timeout=5.0, batch_validation="strict")
    try:
        with pytest.raises(PermanentProviderError) as caught:
            await strict.send_batch(
                [make_email(1), make_email(2, to="not-an-address")], idempotency_key="strict"
            )
    finally:
        await strict.aclose()

    assert caught.value.status == 422
    assert fake.messages == []


async def test_permissive_rejection_marks_only_that_result(
    fake: FakeResend, provider: ResendProvider
) -> None:
    emails = [make_email(1), make_email(2, to="not-an-address"), make_email(3)]

    results = await provider.send_batch(emails, idempotency_key="partial")

    assert [r.error is None for r in results] == [True, False, True]
    assert results[1].provider_message_id is None
    assert [results[0].provider_message_id, results[2].provider_message_id] == [
        m.id for m in fake.messages
    ]
    assert [m.tag("delivery_id") for m in fake.messages] == ["1", "3"]


@pytest.fixture
def lean_fake() -> Iterator[FakeResend]:
    """A fake that keeps no content: a batch's bodies are checked but never built."""
    server = FakeResend(record_content=False).start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_fake_without_content_accepts_and_records_a_batch(lean_fake: FakeResend) -> None:
    lean = ResendProvider(API_KEY, lean_fake.url, timeout=5.0)
    emails = [make_email(1, headers={"X-Campaign": "c1"}), make_email(2)]
    try:
        results = await lean.send_batch(emails, idempotency_key="lean")
    finally:
        await lean.aclose()

    assert [r.provider_message_id for r in results] == [m.id for m in lean_fake.messages]
    assert [m.to for m in lean_fake.messages] == [[e.to] for e in emails]
    assert [m.tag("delivery_id") for m in lean_fake.messages] == ["1", "2"]
    assert {(m.html, m.text) for m in lean_fake.messages} == {(None, None)}


async def test_a_fake_without_content_accepts_utf8_bodies(lean_fake: FakeResend) -> None:
    lean = ResendProvider(API_KEY, lean_fake.url, timeout=5.0)
    try:
        await lean.send_batch([make_email(1, html="<p>Grüße ✓</p>")], idempotency_key="utf8")
    finally:
        await lean.aclose()

    assert len(lean_fake.messages) == 1


async def test_the_fake_serves_its_api_and_its_own_routes_over_http(fake: FakeResend) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        unauthorized = await client.post("/emails/batch", json=[MINIMAL])
        wrong_method = await client.get("/emails")
        stats = await client.get("/_fake/stats")

    assert unauthorized.status_code == 401
    assert unauthorized.json()["name"] == "missing_api_key"
    assert unauthorized.headers["ratelimit-limit"] == "1000"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["name"] == "method_not_allowed"
    assert stats.json() == {"messages": 0, "requests": 1, "replays": 0, "statuses": {"401": 1}}


_EMAIL = b'{"from":"a@b.c","to":"x@y.z","subject":"s",'


@pytest.mark.parametrize(
    ("body", "status", "name"),
    [
        (b"[" + _EMAIL + b'"html":"bad \\q"}]', 400, "validation_error"),  # an escape
        (b"[" + _EMAIL + b'"html":"\xff"}]', 400, "validation_error"),  # UTF-8
        (b"[" + _EMAIL + b'"html":"\xc2\xb7","text":"\xff"}]', 400, "validation_error"),
        (b'[{"from":"a@b.c","to":"x@y.z","subject":"\xff","text":"t"}]', 400, "validation_error"),
        (b"[" + _EMAIL + b'"html":"cut', 400, "validation_error"),
        (b"[" + _EMAIL + b'"html":5}]', 422, "validation_error"),
        (b'[{"from":"a@b.c","subject":"s","text":"t"}]', 422, "missing_required_field"),
        (_EMAIL + b'"text":"t"}', 422, "validation_error"),
        (b'["not an email"]', 422, "validation_error"),
    ],
)  # fmt: skip
async def test_a_fake_without_content_still_refuses_what_resend_refuses(
    lean_fake: FakeResend, body: bytes, status: int, name: str
) -> None:
    async with httpx.AsyncClient(base_url=lean_fake.url) as client:
        response = await client.post(
            "/emails/batch",
            content=body,
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )

    assert response.status_code == status
    assert response.json() == {"statusCode": status, "name": name, "message": ANY}
    assert lean_fake.messages == []


async def test_hanging_provider_with_short_timeout_raises_transient(fake: FakeResend) -> None:
    fake.set_hang()
    impatient = ResendProvider(API_KEY, fake.url, timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(TransientProviderError):
            await impatient.send_batch([make_email(1)], idempotency_key="hang")
    finally:
        await impatient.aclose()

    assert time.monotonic() - started < 3


async def test_unreachable_provider_raises_transient(fake: FakeResend) -> None:
    url = fake.url
    fake.stop()
    adapter = ResendProvider(API_KEY, url, timeout=2.0)
    try:
        with pytest.raises(TransientProviderError):
            await adapter.send_batch([make_email(1)], idempotency_key="down")
    finally:
        await adapter.aclose()


async def test_bad_api_key_raises_permanent(fake: FakeResend) -> None:
    adapter = ResendProvider("not-a-resend-key", fake.url, timeout=5.0)
    try:
        with pytest.raises(PermanentProviderError) as caught:
            await adapter.send_batch([make_email(1)], idempotency_key="auth")
    finally:
        await adapter.aclose()

    assert caught.value.status == 403


def test_results_accept_ids_aligned_by_position() -> None:
    emails = [make_email(1), make_email(2), make_email(3)]
    answer = {
        "data": [{"id": "a"}, None, {"id": "c"}],
        "errors": [{"index": 1, "message": "bad `to`"}],
    }

    assert _results(emails, answer) == [
        SendResult(delivery_id=1, provider_message_id="a"),
        SendResult(delivery_id=2, error="bad `to`"),
        SendResult(delivery_id=3, provider_message_id="c"),
    ]


def test_results_refuse_an_answer_that_cannot_be_paired() -> None:
    emails = [make_email(1), make_email(2), make_email(3)]

    with pytest.raises(PermanentProviderError):
        _results(emails, {"data": [{"id": "a"}]})


@pytest.mark.parametrize(
    "email",
    [
        MINIMAL,
        {"from": "a@b.c", "to": ["x@y.z"] * 50, "subject": "s", "tags": [{"name": "n"}]},
        {"from": "a@b.c", "to": ["x@y.z"] * 51, "subject": "s"},
        {"from": "a@b.c", "to": [], "subject": "s"},
        {"from": "a@b.c", "subject": "s"},
        {**MINIMAL, "subject": 3},
        {**MINIMAL, "template": {"variables": {}}},
        {**MINIMAL, "template": {"id": "t", "variables": {"k": 1.5}}},
        {**MINIMAL, "template": {"id": "t", "variables": {"k": True}}},
        {**MINIMAL, "headers": []},
        ["not", "an", "object"],
    ],
)  # fmt: skip
def test_fake_fast_validator_agrees_with_jsonschema(email: Any) -> None:
    schema = request_schema("/emails/batch")["items"]
    fast = _compile(schema)

    assert fast is not None
    assert fast(email) == jsonschema.Draft202012Validator(schema).is_valid(email)
