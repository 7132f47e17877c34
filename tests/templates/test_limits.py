"""A sponsor's template can cost only so much: size, time and depth, at save and at send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.errors import RenderError, Unprocessable
from service.models import Campaign, Lead
from service.settings import Settings
from service.templates import budget, sandbox
from service.templates.compiled import compile_message
from service.templates.content import Brand, Content
from service.templates.logic import url_builder
from service.templates.urls import UrlBuilder
from service.templates.validate import validate
from service.tracking.tokens import TokenSigner
from tests import factories
from tests.conftest import TokenFactory

SessionMaker = async_sessionmaker[AsyncSession]

BRAND = Brand(sponsor={"name": "ACME", "postal_address": "1 Main St"})
URLS = UrlBuilder("https://mail.example.org", TokenSigner(b"limits-secret-0123456789"))
LONG = '"x" * 9000'  # as long as ``*`` lets a template build a string


@pytest.fixture(autouse=True)
def quick_deadline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A short render deadline, so the tests that reach it end quickly."""
    monkeypatch.setattr(budget.limits, "render_seconds", 0.3)
    yield


def refusal(source: str) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        validate(Content(subject="Hello", message_body=source))
    assert caught.value.status_code == 422
    assert caught.value.field == "message_body"
    assert caught.value.code == "template_sandbox_violation"
    return caught.value


# ------------------------------------------------------------------ refused at save

BUILDS_TOO_MUCH = {
    "percent width": '{{ "%999999999s" % name }}',
    "percent precision": '{{ "%.999999999f" % 1.5 }}',
    "percent star width": '{{ "%*s" % (999999999, name) }}',
    "format width": '{{ "{:>999999999}".format(name) }}',
    "center": "{{ name.center(999999999) }}",
    "ljust": "{{ name.ljust(999999999) }}",
    "rjust": "{{ name.rjust(999999999) }}",
    "zfill": "{{ name.zfill(999999999) }}",
    "expandtabs": f"{{{{ ({LONG} ~ '\\t' * 9000).expandtabs(999) }}}}",
    "replace method": f'{{{{ ({LONG}).replace("x", {LONG}) }}}}',
    "replace filter": f'{{{{ ({LONG}) | replace("x", {LONG}) }}}}',
    "join filter": f"{{{{ ([{LONG}] * 9000) | join }}}}",
    "join method": f'{{{{ "".join([{LONG}] * 9000) }}}}',
    "big power": "{{ 9 ** (9 ** 9) }}",
    "big product": "{{ (2 ** 1000) * (2 ** 1000) }}",
    "output of a loop": f"{{% for a in {LONG} %}}{{{{ {LONG} }}}}{{% endfor %}}",
}


@pytest.mark.parametrize("source", BUILDS_TOO_MUCH.values(), ids=BUILDS_TOO_MUCH.keys())
def test_a_template_building_a_huge_value_is_refused_when_saved(source: str) -> None:
    started = time.monotonic()
    refusal(source)
    assert time.monotonic() - started < 1


RUNS_TOO_LONG = {
    "nested loops over long strings": (
        f"{{% for a in {LONG} %}}{{% for b in {LONG} %}}{{% endfor %}}{{% endfor %}}"
    ),
    "exponential macro": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(19) }}"
    ),
}


@pytest.mark.parametrize("source", RUNS_TOO_LONG.values(), ids=RUNS_TOO_LONG.keys())
def test_a_template_running_past_the_deadline_is_refused_when_saved(source: str) -> None:
    started = time.monotonic()
    error = refusal(source)
    assert "longer than" in error.message
    assert time.monotonic() - started < 1


RECURSES = {
    "recursive macro": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "recursive caller": (
        "{% macro f() %}{{ caller() }}{% endmacro %}"
        "{% macro g() %}{% call f() %}{{ g() }}{% endcall %}{% endmacro %}{{ g() }}"
    ),
    "recursive loop": "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
}


@pytest.mark.parametrize("source", RECURSES.values(), ids=RECURSES.keys())
def test_a_template_recursing_without_end_is_refused_when_saved(source: str) -> None:
    error = refusal(source)
    assert f"more than {sandbox.MAX_CALL_DEPTH} deep" in error.message


def test_a_real_newsletter_with_loops_and_macros_stays_within_the_limits() -> None:
    source = (
        "{% macro item(label) %}- {{ label | upper }}{% endmacro %}"
        "{% for word in 'alpha beta gamma'.split() %}{{ item(word) }}\n{% endfor %}"
        "{{ name.center(40) }} {{ '%5.2f' % 3.14159 }} {{ ['a', 'b'] | join(', ') }}"
    )
    validate(Content(subject="Hello", message_body=source))
    message = compile_message(Content(subject="Hello", message_body=source), BRAND)
    rendered = message.render({"name": "Ada"}, URLS.for_delivery(1, len(message.links)))
    assert "- ALPHA" in rendered.text and "3.14" in rendered.text


# ------------------------------------------------------------------ at send time


def render_for(source: str, lead: dict[str, Any]) -> str:
    message = compile_message(Content(subject="Hello", message_body=source), BRAND)
    with pytest.raises(RenderError) as caught:
        message.render(lead, URLS.for_delivery(1, len(message.links)))
    return str(caught.value)


def test_a_recipient_whose_data_blows_a_value_up_fails_alone_with_the_reason() -> None:
    reason = render_for(
        '{{ attributes.bio | default("") | replace("a", "a" * 5000) }}',
        {"email": "a@example.com", "attributes": {"bio": "a" * 1000}},
    )
    assert "the replaced string would be 5,000,000 characters" in reason


def test_a_recipient_whose_data_makes_the_message_too_long_fails_alone() -> None:
    source = "{% for a in attributes.s | default('') %}{{ attributes.s }}{% endfor %}"
    reason = render_for(source, {"email": "a@example.com", "attributes": {"s": "y" * 5000}})
    assert "characters (at most 1,000,000)" in reason


def test_a_recipient_whose_data_makes_the_render_slow_fails_at_the_deadline() -> None:
    source = (
        "{% for a in attributes.s | default('') %}"
        "{% for b in attributes.s | default('') %}{% endfor %}{% endfor %}"
    )
    started = time.monotonic()
    reason = render_for(source, {"email": "a@example.com", "attributes": {"s": "z" * 20000}})
    assert "longer than 0.3 s" in reason
    assert time.monotonic() - started < 1


# ------------------------------------------------------------------ the event loop stays free


async def test_healthz_keeps_answering_while_the_worst_template_is_checked(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    worst = RUNS_TOO_LONG["nested loops over long strings"]
    saving = asyncio.create_task(
        client.post(
            f"/api/v1/sponsors/{sponsor}/templates",
            headers=token(sponsor),
            json={"name": "Worst", "subject": "Hi", "message_body": worst},
        )
    )
    await asyncio.sleep(0.02)  # the check is under way
    answered = 0
    while not saving.done():
        response = await client.get("/healthz")
        assert response.status_code == 200
        answered += 1
        await asyncio.sleep(0.01)
    refused = await saving
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "message_body"
    # A held event loop answers the first request only once the check is over, so one
    # answer in all; a free one answers again while the check runs. How fast each answer
    # comes is the machine's business (benchmarks measure speed).
    assert answered >= 2, "the check held the event loop"


async def test_a_preview_whose_lead_blows_the_template_up_is_a_422_with_the_reason(
    client: httpx.AsyncClient,
    sponsor: str,
    token: TokenFactory,
    sessions: SessionMaker,
) -> None:
    email = f"bio@{sponsor}.limits"
    rows = [{"email": email, "attributes": {"bio": "a" * 1000}}]
    await factories.add_leads(client, sponsor, token(sponsor), rows)
    async with sessions() as session:
        lead = await session.scalar(select(Lead.id).where(Lead.email == email))
    body = factories.campaign(
        draft=True, message_body='{{ attributes.bio | default("") | replace("a", "a" * 5000) }}'
    )
    base = f"/api/v1/sponsors/{sponsor}/campaigns"
    created = await client.post(base, headers=token(sponsor), json=body)
    assert created.status_code == 202, created.text
    preview = await client.get(
        f"{base}/{created.json()['id']}/preview", headers=token(sponsor), params={"lead_id": lead}
    )
    assert preview.status_code == 422
    assert preview.json()["error"]["code"] == "render_error"
    assert "5,000,000 characters" in preview.json()["error"]["message"]


async def test_the_view_in_browser_page_of_a_costly_template_is_a_404_page_in_bounded_time(
    client: httpx.AsyncClient, sponsor: str, migrated: Settings, sessions: SessionMaker
) -> None:
    sent = await factories.sent_campaign(sessions, sponsor, recipients=1)
    async with sessions.begin() as session:
        await session.execute(
            update(Campaign)
            .where(Campaign.id == sent.id)
            .values(message_body=RUNS_TOO_LONG["nested loops over long strings"])
        )
    view = url_builder(migrated).for_delivery(sent.delivery_ids[0], 0).view_in_browser
    started = time.monotonic()
    page = await client.get(httpx.URL(view).path)
    assert page.status_code == 404
    assert "no longer available" in page.text
    assert time.monotonic() - started < 1.5
