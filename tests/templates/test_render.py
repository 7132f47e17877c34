"""Rendering: sandbox, validation, personalization, layout, links, headers (RFC 8058)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.errors import RenderError, Unprocessable
from service.settings import Settings
from service.templates.compiled import CompiledMessage, compile_message
from service.templates.content import Brand, Content
from service.templates.urls import DeliveryUrls, UrlBuilder
from service.templates.validate import validate
from service.tracking.tokens import Kind, TokenSigner
from tests import factories
from tests.conftest import TokenFactory, eventually
from tests.fakes.resend_server import FakeResend

GOLDEN = Path(__file__).parent / "golden"
SIGNER = TokenSigner(b"golden-secret-0123456789")
URLS = UrlBuilder("https://mail.example.org", SIGNER)
BRAND = Brand(
    sponsor={"id": "acme", "name": "ACME Events", "postal_address": "1 Main St, 10115 Berlin"},
    event={"id": "expo-26", "name": "Expo 2026"},
)
LEAD: dict[str, Any] = {
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "first_name": "Ada",
    "company": "Analytical Engines",
    "attributes": {"booth": "B12"},
}


def compiled(body: str = "Hi {{ first_name }}", **kw: Any) -> CompiledMessage:
    tracking = kw.pop("tracking", True)
    content = Content(subject=kw.pop("subject", "Hello {{ name }}"), message_body=body, **kw)
    return compile_message(content, BRAND, tracking=tracking)


def render(message: CompiledMessage, lead: dict[str, Any] | None = None, delivery: int = 42) -> Any:
    return message.render(
        LEAD if lead is None else lead, URLS.for_delivery(delivery, len(message.links))
    )


def rejection(content: Content) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        validate(content)
    return caught.value


# ---------------------------------------------------------------- sandbox

SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ url_for.__globals__['os'] }}",
    "{{ ''['__class__'] }}",
    "{{ name['__class__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{% set x = ''.__class__ %}{{ x }}",
    "{{ attributes.__class__.__base__.__subclasses__() }}",
    "{{ '{0.__class__}'.format(name) }}",
    "{{ 999999999 ** 999999999 }}",
    "{{ 'x' * 100000000 }}",
    "{% for i in range(100000000) %}{% endfor %}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{% extends 'base.html' %}",
    "{{ [].pop() }}",
    "{{ name|safe }}",
    "{% debug %}",
    "{{ sponsor.__dict__ }}",
]


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
@pytest.mark.parametrize("field", ["subject", "message_body", "html_body", "text_body"])
def test_template_injection_is_refused_when_saved(payload: str, field: str) -> None:
    parts = {"subject": "Hi", "message_body": "Hello", field: payload.replace("\n", " ")}
    error = rejection(Content(**parts))
    assert error.status_code == 422
    assert error.field == field
    assert error.code in {
        "template_sandbox_violation",
        "unknown_template_variable",
        "template_syntax_error",
    }


def test_there_are_at_least_fifteen_injection_payloads() -> None:
    assert len(SSTI_PAYLOADS) >= 15


def test_dunder_access_is_a_sandbox_violation() -> None:
    error = rejection(Content("Hi", "{{ ''.__class__.__mro__ }}"))
    assert error.code == "template_sandbox_violation"
    assert "__mro__" in error.message or "__class__" in error.message


def test_unknown_variables_are_named() -> None:
    error = rejection(Content("Hi {{ nmae }}", "Dear {{ compnay }} and {{ nmae }}"))
    assert error.code == "unknown_template_variable"
    assert error.field == "subject"
    assert "nmae" in error.message
    error = rejection(Content("Hi", "Dear {{ compnay }}"))
    assert (error.field, error.code) == ("message_body", "unknown_template_variable")
    assert "compnay" in error.message


def test_syntax_errors_carry_line_and_column() -> None:
    error = rejection(Content("Hi", "line one\nline two {{ name \nline three"))
    assert error.code == "template_syntax_error"
    assert error.field == "message_body"
    assert re.search(r"line \d+, column \d+", error.message)
    error = rejection(Content("Hi", "ok\n  {% if name %}never closed"))
    assert "column 3" in error.message


def test_a_subject_with_a_line_break_is_refused() -> None:
    for subject in ("Hi\r\nBcc: victim@example.com", "Hi\nthere", "Hi\rthere"):
        error = rejection(Content(subject, "Hello"))
        assert (error.field, error.code) == ("subject", "invalid_subject")


def test_line_breaks_from_lead_fields_never_reach_the_subject() -> None:
    message = compiled(subject="Hi {{ name }}")
    rendered = render(message, {"name": "Eve\r\nBcc: victim@example.com", "email": "e@x.io"})
    assert "\r" not in rendered.subject and "\n" not in rendered.subject
    assert rendered.subject == "Hi Eve Bcc: victim@example.com"


def test_subjects_are_trimmed_and_capped_at_998_bytes() -> None:
    message = compiled(subject="  {{ name }}  ")
    rendered = render(message, {"name": "é" * 800, "email": "e@x.io"})
    assert len(rendered.subject.encode()) <= 998
    assert rendered.subject == rendered.subject.strip()
    assert rendered.subject.startswith("é")


async def test_sponsor_names_and_reply_to_with_line_breaks_are_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for field in ("from_name", "reply_to", "name"):
        body = {"name": "S", "from_email": "a@b.example", field: "Evil\r\nBcc: x@y.example"}
        response = await client.put("/api/v1/sponsors/crlf-test", headers=admin, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field


def test_a_recipient_whose_data_breaks_the_template_fails_alone() -> None:
    message = compiled("{{ attributes.count + 1 }}")
    with pytest.raises(RenderError):
        render(message, {"email": "a@x.io", "attributes": {"count": "not a number"}})
    assert "3" in render(message, {"email": "b@x.io", "attributes": {"count": 2}}).text


# ---------------------------------------------------------------- personalization


def test_fallbacks_for_missing_names() -> None:
    message = compiled("Hi {{ name }} / {{ first_name }} / [{{ last_name }}] / [{{ company }}]")
    rendered = render(message, {"email": "x@y.io"})
    assert "Hi there / there / [] / []" in rendered.text


def test_an_explicit_default_filter_applies() -> None:
    message = compiled("From {{ company | default('your team') }}")
    assert "From your team" in render(message, {"email": "x@y.io"}).text
    assert "From Analytical Engines" in render(message).text


def test_every_documented_variable_renders() -> None:
    body = (
        "{{ name }}|{{ first_name }}|{{ last_name }}|{{ company }}|{{ title }}|{{ email }}|"
        "{{ attributes.booth }}|{{ sponsor.name }}|{{ event.name }}|"
        "{{ unsubscribe_url }}|{{ view_in_browser_url }}"
    )
    lead = {**LEAD, "last_name": "Lovelace", "title": "Countess"}
    text = render(compiled(body), lead).text
    assert "Ada Lovelace|Ada|Lovelace|Analytical Engines|Countess|ada@example.com|B12|" in text
    assert "ACME Events|Expo 2026|https://mail.example.org/u/" in text
    assert "|https://mail.example.org/v/" in text


def test_unicode_emoji_and_rtl_names_survive() -> None:
    message = compiled("Hello {{ name }}!", subject="🎉 {{ name }}")
    for name in ("Zoë Ünal-Łukasiewicz", "🚀 Rocket 👩‍🚀", "محمد العربي", "שלום עליכם", "王小明"):
        rendered = render(message, {"name": name, "email": "u@x.io"})
        assert rendered.subject == f"🎉 {name}"
        assert f"Hello {name}!" in rendered.text
        assert name in rendered.html
    assert 'dir="auto"' in render(message).html


def test_html_in_lead_fields_is_escaped() -> None:
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    message = compiled("Hi {{ name }} from {{ company }}", html_body=None)
    rendered = render(message, {"name": evil, "company": evil, "email": "e@x.io"})
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert 'onerror="alert' not in rendered.html
    html_message = compiled(html_body="<p>Hi {{ name }}</p>")
    assert "&lt;script&gt;" in render(html_message, {"name": evil, "email": "e@x.io"}).html


def test_raw_html_in_a_markdown_body_is_shown_not_run() -> None:
    rendered = render(compiled("Look: <script>alert(1)</script> **bold**"))
    assert "<script>" not in rendered.html
    assert "<strong>bold</strong>" in rendered.html


def test_literal_braces_in_the_body_are_text() -> None:
    rendered = render(compiled('JSON looks like {"a": 1} and {b}'))
    assert '{"a": 1} and {b}' in rendered.text


# ---------------------------------------------------------------- layout and parts


def test_the_text_part_is_always_present() -> None:
    for message in (compiled("**Hi** {{ name }}"), compiled(html_body="<h1>Hi</h1><p>there</p>")):
        text = render(message).text
        assert text.strip()
        assert "<" not in text.split("--")[0]
    assert "Hi\n\nthere" in render(compiled(html_body="<h1>Hi</h1><p>there</p>")).text


def test_a_given_text_body_is_used() -> None:
    message = compiled("**Hi**", text_body="Plain {{ first_name }}: https://example.com/x")
    text = render(message).text
    assert text.startswith("Plain Ada: https://mail.example.org/c/")


def test_the_footer_carries_sponsor_address_reason_and_unsubscribe() -> None:
    rendered = render(compiled())
    for part in (rendered.html, rendered.text):
        assert "ACME Events" in part
        assert "1 Main St, 10115 Berlin" in part
        assert "because you shared your contact details with ACME Events at Expo 2026" in part
        assert "https://mail.example.org/u/" in part
    unsubscribe = re.search(r'href="(https://mail.example.org/u/[^"]+)"', rendered.html)
    assert unsubscribe is not None
    claims = SIGNER.verify(unsubscribe.group(1).rsplit("/", 1)[1], Kind.UNSUBSCRIBE)
    assert claims is not None and claims.delivery_id == 42


def test_the_layout_is_600px_inlined_and_dark_mode_aware() -> None:
    html = render(compiled("Hi")).html
    assert 'width="600"' in html and "max-width: 600px" in html
    assert 'role="presentation"' in html
    assert "prefers-color-scheme: dark" in html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert '<p style="margin: 0 0 16px 0;">' in html  # CSS inlined at compile time
    assert 'alt=""' in html


# ---------------------------------------------------------------- links and pixel


def test_links_become_tracked_and_targets_are_numbered() -> None:
    message = compiled(
        "[Agenda](https://example.com/agenda?a=1&b=2) and https://example.com/map.\n\n"
        "[Agenda again](https://example.com/agenda?a=1&b=2) [personal](https://x.io/{{ email }})"
    )
    assert message.links == (
        "https://example.com/agenda?a=1&b=2",
        "https://example.com/map",
        "https://example.com/agenda?a=1&b=2",
    )
    rendered = render(message, delivery=7)
    hrefs = re.findall(r'href="([^"]+)"', rendered.html)
    clicks = [h for h in hrefs if h.startswith("https://mail.example.org/c/")]
    assert len(clicks) == 3
    positions = [SIGNER.verify(h.rsplit("/", 1)[1], Kind.CLICK) for h in clicks]
    assert [(c.delivery_id, c.position) for c in positions if c] == [(7, 0), (7, 1), (7, 2)]
    assert "https://x.io/ada@example.com" in hrefs  # personalized links stay as written
    assert "example.com/agenda" not in rendered.html
    assert "https://mail.example.org/c/" in rendered.text
    pixel = re.search(r'<img src="https://mail.example.org/o/([^"]+)"', rendered.html)
    assert pixel is not None and SIGNER.verify(pixel.group(1), Kind.OPEN) is not None


def test_links_in_an_html_body_are_tracked_too() -> None:
    message = compiled(html_body='<p><a href="https://example.com/a">A</a></p>')
    assert message.links == ("https://example.com/a",)
    assert "https://mail.example.org/c/" in render(message).html


def test_tracking_off_leaves_links_and_adds_no_pixel() -> None:
    message = compiled("[Agenda](https://example.com/agenda)", tracking=False)
    rendered = render(message)
    assert message.links == ()
    assert 'href="https://example.com/agenda"' in rendered.html
    assert "/o/" not in rendered.html and "/c/" not in rendered.html


def test_tokens_for_one_delivery_are_signed_at_once_and_verify() -> None:
    urls: DeliveryUrls = URLS.for_delivery(99, 3)
    assert SIGNER.verify(urls.view_in_browser.rsplit("/", 1)[1], Kind.VIEW) is not None
    assert SIGNER.sign_many(99, [(Kind.CLICK, 2)]) == [SIGNER.sign(Kind.CLICK, 99, 2)]
    assert [SIGNER.verify(u.rsplit("/", 1)[1], Kind.CLICK).position for u in urls.links] == [  # type: ignore[union-attr]
        0,
        1,
        2,
    ]


# ---------------------------------------------------------------- golden files

GOLDEN_CASES = {
    "markdown": Content(
        subject="Your {{ event.name }} recap, {{ first_name }}",
        message_body=(
            "Hi {{ first_name }},\n\nThanks for visiting **booth {{ attributes.booth }}**.\n\n"
            "- [Slides](https://example.com/slides)\n- [Book a call](https://example.com/call)\n\n"
            "{% if company %}Best wishes to everyone at {{ company }}.{% endif %}"
        ),
    ),
    "html_body": Content(
        subject="Hello {{ name }}",
        message_body="unused",
        html_body='<h1>Welcome</h1><p>Dear {{ name }}, <a href="https://example.com/x">read</a>.</p>',
    ),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_layout_matches_the_golden_files(case: str) -> None:
    message = compile_message(GOLDEN_CASES[case], BRAND)
    rendered = render(message, delivery=1)
    for suffix, actual in (("html", rendered.html), ("txt", rendered.text)):
        path = GOLDEN / f"{case}.{suffix}"
        if os.environ.get("UPDATE_GOLDEN"):
            path.write_text(actual)
        assert actual == path.read_text(), f"{path} differs (UPDATE_GOLDEN=1 rewrites it)"


# ---------------------------------------------------------------- headers, end to end


async def test_sent_messages_carry_rfc8058_headers_and_list_id(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    fake: FakeResend,
    workers: None,
    migrated: Settings,
) -> None:
    headers = token(sponsor)
    await factories.add_leads(client, sponsor, headers, factories.leads(2, domain=f"{sponsor}.h"))
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=headers,
        json=factories.campaign(message_body="See [us](https://example.com/booth)"),
    )
    assert response.status_code == 202, response.text

    async def delivered() -> list[Any]:
        got = [m for m in fake.messages if m.to[0].endswith(f"@{sponsor}.h")]
        return got if len(got) == 2 else []

    messages = await eventually(delivered)
    base = migrated.public_base_url.rstrip("/")
    for message in messages:
        assert set(message.headers) >= {"List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"}
        assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        match = re.fullmatch(
            rf"<{re.escape(base)}/u/([A-Za-z0-9_-]+)>", message.headers["List-Unsubscribe"]
        )
        assert match, message.headers["List-Unsubscribe"]
        assert SIGNER is not None
        claims = migrated.tracking_signer().verify(match.group(1), Kind.UNSUBSCRIBE)
        assert claims is not None
        assert message.headers["List-Id"] == f'"Test Sponsor" <{sponsor}.127.0.0.1>'
        assert message.text and "1 Test Street, Berlin" in message.text
        assert message.html and f"{base}/u/{match.group(1)}" in message.html


def test_the_mailto_unsubscribe_is_added_when_configured(migrated: Settings) -> None:
    from worker.delivery.context import CampaignContext

    settings = migrated.model_copy(update={"unsubscribe_mailto": "unsub@lists.example"})
    urls = URLS.for_delivery(5, 0)
    context = CampaignContext.__new__(CampaignContext)
    context.list_id = "<acme.lists.example>"
    context.mailto = settings.unsubscribe_mailto
    headers = context.headers(urls)
    token = urls.unsubscribe.rsplit("/", 1)[1]
    assert headers["List-Unsubscribe"] == (
        f"<{urls.unsubscribe}>, <mailto:unsub@lists.example?subject=unsubscribe%20{token}>"
    )
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_compliance_headers_reach_the_outbox_eml_and_the_resend_request(
    tmp_path: Path,
) -> None:
    from email import message_from_bytes, policy

    from worker.providers.base import OutgoingEmail
    from worker.providers.outbox import OutboxProvider
    from worker.providers.resend_request import email_params

    message = compiled("Hi {{ name }}")
    urls = URLS.for_delivery(11, len(message.links))
    rendered = render(message, delivery=11)
    headers = {
        "List-Unsubscribe": f"<{urls.unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "<acme.mail.example.org>",
    }
    email = OutgoingEmail(
        delivery_id=11,
        campaign_id="c1",
        sender="ACME <news@acme.example>",
        to="ada@example.com",
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        headers=headers,
    )
    await OutboxProvider(tmp_path).send_batch([email], "key")
    eml = message_from_bytes((tmp_path / "c1" / "11.eml").read_bytes(), policy=policy.default)
    for name, value in headers.items():
        assert str(eml[name]) == value
    assert eml.get_body(("plain",)) is not None and eml.get_body(("html",)) is not None
    assert email_params(email)["headers"] == headers
