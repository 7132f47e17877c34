"""Slot rendering (``service/templates/slots.py``) is byte-for-byte Jinja's rendering."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service.errors import RenderError
from service.templates.compiled import (
    MAX_TEMPLATE_VARIABLES,
    CompiledMessage,
    RenderedMessage,
    compile_message,
)
from service.templates.content import Brand, Content
from service.templates.urls import UrlBuilder
from service.tracking.tokens import TokenSigner
from tests.templates.test_render import GOLDEN_CASES

URLS = UrlBuilder("https://mail.example.org", TokenSigner(b"slots-secret-0123456789"))
BRAND = Brand(
    sponsor={"name": "ACME <Events> & Co", "postal_address": "1 Main St, 10115 Berlin"},
    event={"name": "Expo {2026}"},
)
PARAGRAPH = (
    "Hi {{ name }}, thanks for visiting our booth at {{ event.name }}. Here is what "
    "{{ company | default('your team') }} could do next: [read](https://example.com/a).\n\n"
)

CASES: dict[str, Content] = {
    **GOLDEN_CASES,
    "repeated_variables": Content(subject="Hello {{ name }}", message_body=PARAGRAPH * 38),
    "filters_and_lookups": Content(
        subject="{{ first_name | default('friend') | title }} at {{ sponsor.name }}",
        message_body=(
            "{{ attributes.booth }} {{ attributes['tier'] }} {{ name | upper }} "
            "{{ title | truncate(5) }} {{ company | d('x', true) | trim }} "
            "{{ last_name | replace('a', '<b>') }} {{ attributes.items }}"
        ),
    ),
    "arithmetic_that_can_fail": Content(
        subject="{{ attributes.n / attributes.d }}",
        message_body="{{ attributes.score * 2 }} {{ attributes.score | int + 1 }} "
        "{{ attributes.x.y }} {{ attributes.tags | join(', ') }}",
    ),
    "blocks_per_recipient": Content(
        subject="Hi",
        message_body=(
            "{% if company %}At {{ company }}{% else %}Alone{% endif %}\n\n"
            "{% for key in attributes %}{{ key }}={{ attributes[key] }};{% endfor %}\n\n"
            "{% if event.name %}See you at {{ event.name }}{% endif %}"
        ),
        text_body="{% for key in attributes %}- {{ loop.index }} {{ key }}\n{% endfor %}",
    ),
    "html_with_personal_link": Content(
        subject="Hello {{ name }}",
        html_body='<p><a href="{{ attributes.booth }}">booth</a> {{ email }} &amp; {{ "{" }}</p>',
    ),
    # Static text a bytes format would read as conversions, in both parts.
    "percent_signs": Content(
        subject="100% for {{ name }}",
        message_body="Save 50%% or 100%, {{ name }}: a %s and %(x)s off for {{ company }}%",
    ),
    "assignments_stay_on_jinja": Content(
        subject="{% set who = name %}Hi {{ who }}",
        message_body="{% set who = first_name %}{{ who }}",
    ),
}
MESSAGES = {case: compile_message(content, BRAND) for case, content in CASES.items()}


def jinja_only(message: CompiledMessage) -> CompiledMessage:
    return dataclasses.replace(message, subject_slots=None, html_slots=None, text_slots=None)


def outcome(message: CompiledMessage, lead: dict[str, Any]) -> RenderedMessage | str:
    try:
        return message.render(lead, URLS.for_delivery(7, len(message.links)))
    except RenderError as exc:
        return f"RenderError: {exc}"


awkward_text = st.text(alphabet=st.sampled_from("ab Zé€😀<>&\"'{}%\n\t\\"), max_size=12)
values = st.one_of(
    st.none(),
    awkward_text,
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(awkward_text, max_size=3),
    st.dictionaries(st.sampled_from(["y", "z"]), awkward_text, max_size=2),
)
leads = st.fixed_dictionaries(
    {
        "email": st.just("lead@example.com"),
        "name": st.one_of(st.none(), awkward_text),
        "first_name": st.one_of(st.none(), awkward_text),
        "last_name": st.one_of(st.none(), awkward_text),
        "company": st.one_of(st.none(), awkward_text),
        "title": st.one_of(st.none(), awkward_text),
        "attributes": st.dictionaries(
            st.sampled_from(["booth", "tier", "score", "n", "d", "x", "tags", "items"]),
            values,
            max_size=6,
        ),
    }
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(sorted(CASES)), lead=leads)
def test_slots_render_exactly_what_jinja_renders(case: str, lead: dict[str, Any]) -> None:
    message = MESSAGES[case]
    assert outcome(message, lead) == outcome(jinja_only(message), lead)


def decoded(rendered: RenderedMessage | str) -> RenderedMessage | str:
    """A message rendered ``as_json`` with its JSON parts decoded back into the str fields."""
    if isinstance(rendered, str):
        return rendered
    html, text = rendered.html, rendered.text
    if rendered.html_json is not None:
        assert html == ""
        html = orjson.loads(rendered.html_json)
    if rendered.text_json is not None:
        assert text == ""
        text = orjson.loads(rendered.text_json)
    return RenderedMessage(rendered.subject, html, text)


@hypothesis_settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(sorted(CASES)), lead=leads)
def test_json_parts_are_the_json_encoding_of_the_rendered_parts(
    case: str, lead: dict[str, Any]
) -> None:
    message = MESSAGES[case]
    plain = outcome(message, lead)
    try:
        as_json: RenderedMessage | str = message.render(
            lead, URLS.for_delivery(7, len(message.links)), as_json=True
        )
    except RenderError as exc:
        as_json = f"RenderError: {exc}"
    assert decoded(as_json) == plain
    if isinstance(as_json, RenderedMessage) and isinstance(plain, RenderedMessage):
        for encoded, text in ((as_json.html_json, plain.html), (as_json.text_json, plain.text)):
            assert encoded is None or encoded == orjson.dumps(text)


@pytest.mark.parametrize("case", [*sorted(GOLDEN_CASES), "repeated_variables"])
def test_plain_templates_take_the_slot_path(case: str) -> None:
    message = MESSAGES[case]
    assert message.subject_slots and message.html_slots and message.text_slots


def test_each_distinct_expression_is_one_slot() -> None:
    html_slots = MESSAGES["repeated_variables"].html_slots
    assert html_slots is not None
    # name, company | default(...), one per tracked link, pixel, unsubscribe, preference
    # centre, view in browser.
    assert html_slots.slot_count == 2 + 38 + 4


def test_a_template_that_assigns_stays_on_jinja() -> None:
    message = MESSAGES["assignments_stay_on_jinja"]
    assert message.subject_slots is None and message.html_slots is None
    rendered = outcome(message, {"name": "Ada", "first_name": "A"})
    assert isinstance(rendered, RenderedMessage) and rendered.subject == "Hi Ada"


def test_a_failing_expression_fails_the_recipient_as_jinja_does() -> None:
    message = MESSAGES["arithmetic_that_can_fail"]
    lead = {"name": "x", "attributes": {"n": 1, "d": 0}}
    assert outcome(message, lead) == "RenderError: ZeroDivisionError: division by zero"
    assert outcome(jinja_only(message), lead) == outcome(message, lead)


def filled(template: str, variables: dict[str, str]) -> str:
    """``template`` as a provider fills it: each ``{{{KEY}}}`` replaced by its value as is."""
    return re.sub(r"\{\{\{(\w+)\}\}\}", lambda m: variables[m.group(1)], template)


TEMPLATE_CASES = sorted(case for case, message in MESSAGES.items() if message.provider_template())


@hypothesis_settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(TEMPLATE_CASES), lead=leads)
def test_a_provider_template_filled_with_the_variables_is_the_rendered_message(
    case: str, lead: dict[str, Any]
) -> None:
    message = MESSAGES[case]
    template = message.provider_template()
    assert template is not None
    urls = URLS.for_delivery(7, len(message.links))
    try:
        subject, values = message.variables(template, lead, urls)
    except RenderError as exc:
        assert outcome(message, lead) == f"RenderError: {exc}"
        return
    variables = dict(zip(template.keys, values, strict=True))
    filled_message = RenderedMessage(
        subject, filled(template.html, variables), filled(template.text, variables)
    )
    assert filled_message == outcome(message, lead)


def test_most_messages_can_be_provider_templates() -> None:
    assert len(TEMPLATE_CASES) >= len(GOLDEN_CASES)
    template = MESSAGES["html_with_personal_link"].provider_template()
    assert template is not None
    assert template.keys == (
        *("H0", "H1", "H2", "H3", "H4", "H5"),
        *("T0", "T1", "T2", "T3", "T4"),
    )
    assert 'href="{{{H0}}}"' in template.html and "</a> {{{H1}}} &amp; {</p>" in template.html


@pytest.mark.parametrize(
    "content",
    [
        # Jinja only: no slots to make variables of.
        Content(subject="Hi", message_body="{% set who = name %}{{ who }}"),
        # Static text a provider would read as a tag, or a brace touching a variable.
        Content(subject="Hi", message_body="a", text_body="{{ '{{' }} literal"),
        Content(subject="Hi", message_body="a", text_body="{{ '{' }}{{ name }}"),
        Content(subject="Hi", message_body="a", text_body="{{ name }}{{ '}' }}"),
    ],
)
def test_messages_a_provider_could_misread_are_not_provider_templates(content: Content) -> None:
    assert compile_message(content, BRAND).provider_template() is None


def test_a_message_with_more_variables_than_the_provider_takes_is_not_a_template() -> None:
    # One slot per tracked link: 50 links, and name, company, pixel, unsubscribe,
    # preferences, view.
    message = compile_message(Content(subject="Hi", message_body=PARAGRAPH * 50), BRAND)
    assert message.html_slots is not None and message.html_slots.slot_count == 56
    assert message.provider_template() is None
    # At the limit (38 links: 44 HTML slots and 6 text slots) it still is one.
    template = MESSAGES["repeated_variables"].provider_template()
    assert template is not None and len(template.keys) == MAX_TEMPLATE_VARIABLES
