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
from collections.abc import Iterator
from typing import Any, cast
from unittest.mock import ANY

import httpx
import jsonschema
import orjson
import pytest
import resend
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from resend.exceptions import ResendError

from service.errors import (
    PermanentProviderError,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from tests.fakes.resend_server import (
    MAX_TEMPLATE_VARIABLES,
    FakeResend,
    _compile,
    load_spec,
    request_schema,
)
from worker.providers.base import OutgoingEmail, SendResult
from worker.providers.resend import ResendProvider
from worker.providers.resend_request import pair_results

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
        # No html or text: the batch is decoded in one piece, with the same checks.
        (b'[{"from":"a@b.c","to":"x@y.z","subject":"\xff","template":{"id":"t"}}]', 400,
         "validation_error"),
        (b'[{"from":"a@b.c","to":"x@y.z","subject":"s","template":{"id":"t"}', 400,
         "validation_error"),
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

    assert pair_results(emails, answer) == [
        SendResult(delivery_id=1, provider_message_id="a"),
        SendResult(delivery_id=2, error="bad `to`"),
        SendResult(delivery_id=3, provider_message_id="c"),
    ]


def test_results_refuse_an_answer_that_cannot_be_paired() -> None:
    emails = [make_email(1), make_email(2), make_email(3)]

    with pytest.raises(PermanentProviderError):
        pair_results(emails, {"data": [{"id": "a"}]})


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


# --------------------------------------------------------------------------- templates

AUTH = {"Authorization": f"Bearer {API_KEY}"}
WELCOME_HTML = "<p>Hi {{{NAME}}} on {{{PLAN}}}, code {{{CODE}}}, {{NAME}}</p>"
WELCOME_TEXT = "Hi {{{NAME}}} ({{{PLAN}}})"
WELCOME: dict[str, Any] = {
    "name": "welcome",
    "html": WELCOME_HTML,
    "text": WELCOME_TEXT,
    "variables": [
        {"key": "NAME", "type": "string"},
        {"key": "PLAN", "type": "string", "fallback_value": "free"},
        {"key": "CODE", "type": "number", "fallback_value": 0},
    ],
}


@pytest.fixture(params=["full", "bare"])
def any_fake(request: pytest.FixtureRequest) -> Iterator[FakeResend]:
    """The default fake, and one as benchmarks run it (no schema check, no content kept)."""
    bare = request.param == "bare"
    server = FakeResend(validate=not bare, record_content=not bare).start()
    try:
        yield server
    finally:
        server.stop()


async def call(
    fake: FakeResend, method: str, path: str, body: Any = None, **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=fake.url, headers=AUTH) as client:
        return await client.request(method, path, json=body, headers=headers)


async def published_template(fake: FakeResend, body: dict[str, Any] = WELCOME) -> str:
    created = await call(fake, "POST", "/templates", body)
    assert created.status_code == 200, created.text
    template_id: str = created.json()["id"]
    published = await call(fake, "POST", f"/templates/{template_id}/publish")
    assert published.status_code == 200, published.text
    return template_id


def template_email(template_id: str, to: str = "x@example.com", **variables: Any) -> dict[str, Any]:
    return {
        "from": "news@acme.example",
        "to": to,
        "subject": "Welcome",
        "template": {"id": template_id, "variables": variables},
    }


async def test_a_published_template_is_filled_in_per_email(
    fake: FakeResend,
    provider: ResendProvider,  # points the SDK at the fake
) -> None:
    created = await resend.Templates.create_async(cast(resend.Templates.CreateParams, WELCOME))
    template_id = created["id"]
    assert created["object"] == "template"
    assert fake.templates[template_id].status == "draft"

    published = await resend.Templates.publish_async(template_id)
    fetched = await resend.Templates.get_async(template_id)
    response = await call(
        fake,
        "POST",
        "/emails/batch",
        [
            template_email(template_id, "a@example.com", NAME="Tom & <Jerry>", PLAN="pro", CODE=42),
            template_email(template_id, "b@example.com", NAME="Ann"),
        ],
    )

    assert (published["id"], published["object"]) == (template_id, "template")
    assert fetched["status"] == "published"
    assert (fetched["html"], fetched["text"]) == (WELCOME_HTML, WELCOME_TEXT)
    assert [v["key"] for v in fetched["variables"]] == ["NAME", "PLAN", "CODE"]
    assert fake.templates[template_id].status == "published"
    assert response.status_code == 200, response.text
    first, second = fake.messages
    assert first.html == "<p>Hi Tom & <Jerry> on pro, code 42, {{NAME}}</p>"
    assert first.text == "Hi Tom & <Jerry> (pro)"
    assert second.html == "<p>Hi Ann on free, code 0, {{NAME}}</p>"
    assert second.text == "Hi Ann (free)"
    assert [r.id for r in (first, second)] == [d["id"] for d in response.json()["data"]]


async def test_a_template_without_text_sends_no_text(fake: FakeResend) -> None:
    template_id = await published_template(
        fake,
        {
            "name": "bare",
            "html": "<b>{{{WHO}}}</b>",
            "variables": [{"key": "WHO", "type": "string"}],
        },
    )

    response = await call(fake, "POST", "/emails", template_email(template_id, WHO="you"))

    assert response.status_code == 200, response.text
    (message,) = fake.messages
    assert (message.html, message.text) == ("<b>you</b>", None)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("draft", "is not published"),
        ("unknown", "not found"),
        ("html", "`html` and `text` cannot be used with `template`."),
        ("text", "`html` and `text` cannot be used with `template`."),
        ("missing", "`NAME`"),
        ("boolean", "`template.variables.NAME`"),
    ],
)
async def test_sending_with_a_template_refuses_what_resend_refuses(
    any_fake: FakeResend, case: str, words: str
) -> None:
    published = await published_template(any_fake)
    draft = (await call(any_fake, "POST", "/templates", WELCOME)).json()["id"]
    good = template_email(published, "good@example.com", NAME="Ann")
    bad = {
        "draft": template_email(draft, NAME="Ann"),
        "unknown": template_email(str(uuid.uuid4()), NAME="Ann"),
        "html": {**template_email(published, NAME="Ann"), "html": "<p>x</p>"},
        "text": {**template_email(published, NAME="Ann"), "text": "x"},
        "missing": template_email(published, PLAN="pro"),
        "boolean": template_email(published, NAME=True),
    }[case]

    single = await call(any_fake, "POST", "/emails", bad)
    strict = await call(any_fake, "POST", "/emails/batch", [good, bad])
    assert any_fake.messages == []
    permissive = await call(
        any_fake, "POST", "/emails/batch", [good, bad], **{"x-batch-validation": "permissive"}
    )

    for refused in (single, strict):
        assert refused.status_code == 422
        assert refused.json()["name"] == "validation_error"
        assert words in refused.json()["message"]
    assert strict.json()["message"].startswith("emails[1]: ")
    assert permissive.status_code == 200
    (error,) = permissive.json()["errors"]
    assert error["index"] == 1 and words in error["message"]
    (sent,) = any_fake.messages
    assert sent.to == ["good@example.com"]
    assert [d["id"] for d in permissive.json()["data"]] == [sent.id]


def _variables(count: int) -> list[dict[str, Any]]:
    return [{"key": f"V{i}", "type": "string", "fallback_value": ""} for i in range(count)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"name": "t", "html": "<p>{{{X}}}</p>"},
            "Variable 'X' is used in the template but not defined in the variables list",
        ),
        (
            {"name": "t", "html": "<p/>", "text": "{{{Y}}}", "variables": _variables(1)},
            "Variable 'Y' is used in the template but not defined in the variables list",
        ),
        (
            {
                "name": "t",
                "html": "<p>{{{EMAIL}}}</p>",
                "variables": [{"key": "EMAIL", "type": "string"}],
            },
            "Variable 'EMAIL' is reserved.",
        ),
        (
            {"name": "t", "html": "<p/>", "variables": _variables(MAX_TEMPLATE_VARIABLES + 1)},
            "Too many variables: at most 50.",
        ),
        (
            {"name": "t", "html": "<p/>", "variables": _variables(1) * 2},
            "Variable 'V0' is defined more than once.",
        ),
    ],
)
async def test_creating_a_template_refuses_what_resend_refuses(
    any_fake: FakeResend, body: dict[str, Any], message: str
) -> None:
    response = await call(any_fake, "POST", "/templates", body)

    assert response.status_code == 422
    assert response.json() == {"statusCode": 422, "name": "validation_error", "message": message}
    assert any_fake.templates == {}


async def test_a_template_with_the_most_variables_is_created(fake: FakeResend) -> None:
    body = {"name": "t", "html": "<p/>", "variables": _variables(MAX_TEMPLATE_VARIABLES)}

    response = await call(fake, "POST", "/templates", body)

    assert response.status_code == 200, response.text
    assert list(fake.templates) == [response.json()["id"]]


async def test_a_deleted_template_can_no_longer_be_used(
    fake: FakeResend,
    provider: ResendProvider,  # points the SDK at the fake
) -> None:
    template_id = await published_template(fake)

    removed = await resend.Templates.remove_async(template_id)
    refused = await call(fake, "POST", "/emails", template_email(template_id, NAME="Ann"))
    with pytest.raises(ResendError) as unknown:
        await resend.Templates.get_async(template_id)
    deleted_again = await call(fake, "DELETE", f"/templates/{template_id}")
    published_again = await call(fake, "POST", f"/templates/{template_id}/publish")

    assert (removed["id"], removed["object"], removed["deleted"]) == (template_id, "template", True)
    assert fake.templates == {}
    assert refused.status_code == 422
    assert "not found" in refused.json()["message"]
    assert unknown.value.code == 404
    assert unknown.value.error_type == "not_found"
    for answer in (deleted_again, published_again):
        assert answer.status_code == 404
        assert answer.json()["name"] == "not_found"
    assert fake.messages == []


async def test_template_routes_are_authorized_faulted_and_recorded(fake: FakeResend) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        unauthorized = await client.post("/templates", json=WELCOME)
    fake.fail_next(1, status=500, path="/templates")
    failed = await call(fake, "POST", "/templates", WELCOME)
    template_id = await published_template(fake)
    fetched = await call(fake, "GET", f"/templates/{template_id}")

    assert unauthorized.status_code == 401
    assert unauthorized.json()["name"] == "missing_api_key"
    assert failed.status_code == 500
    assert list(fake.templates) == [template_id]
    assert fetched.json()["status"] == "published"
    assert fetched.headers["ratelimit-limit"] == "1000"
    assert [(r.method, r.path, r.status) for r in fake.requests] == [
        ("POST", "/templates", 401),
        ("POST", "/templates", 500),
        ("POST", "/templates", 200),
        ("POST", f"/templates/{template_id}/publish", 200),
        ("GET", f"/templates/{template_id}", 200),
    ]
    assert fake.requests[2].body == WELCOME
    fake.reset()
    assert fake.templates == {}


async def test_a_fake_without_content_accepts_a_template_batch(lean_fake: FakeResend) -> None:
    template_id = await published_template(lean_fake)
    emails = [template_email(template_id, f"u{i}@example.com", NAME=f"U{i}") for i in range(100)]

    response = await call(lean_fake, "POST", "/emails/batch", emails)

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 100
    assert [m.to for m in lean_fake.messages] == [[e["to"]] for e in emails]
    assert {(m.html, m.text) for m in lean_fake.messages} == {(None, None)}


@pytest.mark.parametrize(
    ("tag", "refused"),
    [
        ({"name": "campaign_id", "value": "d03479b1-fcc1-4bff-be8e-e0c4e244fca6"}, None),
        ({"name": "N" * 256, "value": "9" * 256}, None),
        ({"name": "delivery_id"}, None),
        ({"name": "n", "value": ""}, None),
        ({"name": "é", "value": "v"}, "names"),  # a letter, but not an ASCII one
        ({"name": "n", "value": "²"}, "values"),  # a digit, but not an ASCII one
        ({"name": "n", "value": "a b"}, "values"),
        ({"name": "N" * 257, "value": "v"}, "names"),
        ({"name": "n", "value": "9" * 257}, "values"),
        ({"name": "", "value": "v"}, "names"),
    ],
)
async def test_tags_use_only_ascii_letters_digits_underscores_and_dashes(
    any_fake: FakeResend, tag: dict[str, str], refused: str | None
) -> None:
    email = {**MINIMAL, "html": "<p/>", "tags": [tag]}

    response = await call(any_fake, "POST", "/emails/batch", [email])

    if refused is None:
        assert response.status_code == 200, response.text
    else:
        assert response.json() == {
            "statusCode": 422,
            "name": "validation_error",
            "message": f"emails[0]: Invalid `tags` field: {refused} use only A-Z a-z 0-9 _ -.",
        }
