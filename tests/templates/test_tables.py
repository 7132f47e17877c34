"""Loops and conditions inside tables: where a sponsor put them, through the CSS inliner.

An HTML parser moves text that a table does not allow (between rows, between
cells) out of the table; a ``{% for %}`` between rows must still repeat its rows.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from schemas.triggers import StarterIn
from service.errors import Unprocessable
from service.messages import types
from service.templates.compiled import CompiledMessage, compile_message
from service.templates.content import Brand, Content
from service.templates.validate import validate
from service.triggers import starter
from tests.conftest import SponsorApi, TokenFactory, eventually
from tests.fakes.resend_server import FakeResend
from tests.templates.test_render import BRAND, LEAD, render

ROWS = "<table>{% for item in attributes.rows %}<tr><td>{{ item }}</td></tr>{% endfor %}</table>"


def html_message(html_body: str, **kw: Any) -> CompiledMessage:
    return compile_message(Content(subject="Hello", html_body=html_body), BRAND, **kw)


def lead(**attributes: Any) -> dict[str, Any]:
    return dict(LEAD, attributes=attributes)


def content_of(html: str) -> str:
    """The sponsor's block of a rendered page, between the layout's content cell and footer."""
    found = re.search(
        r'class="content"[^>]*>\n(.*)\n</td></tr>\n<tr><td class="footer"', html, re.S
    )
    assert found is not None, html
    return found.group(1)


def test_a_loop_between_table_rows_repeats_the_rows_in_place() -> None:
    rendered = render(html_message(ROWS), lead(rows=["Ada", "Grace"]))
    assert (
        content_of(rendered.html) == "<table><tr><td>Ada</td></tr><tr><td>Grace</td></tr></table>"
    )


def test_a_loop_over_nothing_leaves_an_empty_table() -> None:
    rendered = render(html_message(ROWS), lead(rows=[]))
    assert content_of(rendered.html) == "<table></table>"


def test_a_condition_between_table_rows_keeps_or_drops_its_row() -> None:
    message = html_message(
        "<table><tr><td>Name</td></tr>"
        "{% if attributes.booth %}<tr><td>Booth {{ attributes.booth }}</td></tr>{% endif %}"
        "</table>"
    )
    shown = content_of(render(message, lead(booth="B12")).html)
    hidden = content_of(render(message, lead()).html)
    assert shown == "<table><tr><td>Name</td></tr><tr><td>Booth B12</td></tr></table>"
    assert hidden == "<table><tr><td>Name</td></tr></table>"


def test_a_loop_around_cells_repeats_the_cells() -> None:
    message = html_message(
        "<table><tr>{% for item in attributes.rows %}<td>{{ item }}</td>{% endfor %}</tr></table>"
    )
    rendered = render(message, lead(rows=["a", "b", "c"]))
    assert content_of(rendered.html) == "<table><tr><td>a</td><td>b</td><td>c</td></tr></table>"


def test_loops_in_nested_tables_repeat_their_own_rows() -> None:
    message = html_message(
        "<table>{% for day in attributes.days %}<tr><td>{{ day.label }}"
        "<table>{% for slot in day.slots %}<tr><td>{{ slot }}</td></tr>{% endfor %}</table>"
        "</td></tr>{% endfor %}</table>"
    )
    days = [{"label": "Mon", "slots": ["9:00", "10:00"]}, {"label": "Tue", "slots": ["14:00"]}]
    rendered = render(message, lead(days=days))
    assert content_of(rendered.html) == (
        "<table>"
        "<tr><td>Mon<table><tr><td>9:00</td></tr><tr><td>10:00</td></tr></table></td></tr>"
        "<tr><td>Tue<table><tr><td>14:00</td></tr></table></td></tr>"
        "</table>"
    )


def test_a_table_with_its_own_tbody_keeps_it() -> None:
    message = html_message(
        "<table><thead><tr><th>Who</th></tr></thead><tbody>"
        "{% for item in attributes.rows %}<tr><td>{{ item }}</td></tr>{% endfor %}"
        "</tbody></table>"
    )
    rendered = render(message, lead(rows=["Ada", "Grace"]))
    assert content_of(rendered.html) == (
        "<table><thead><tr><th>Who</th></tr></thead>"
        "<tbody><tr><td>Ada</td></tr><tr><td>Grace</td></tr></tbody></table>"
    )


def test_the_text_part_follows_a_loop_between_rows() -> None:
    rendered = render(html_message(ROWS), lead(rows=["Ada", "Grace"]))
    body = rendered.text.split("\n--\n")[0]
    assert body.split() == ["Ada", "Grace"]


def test_statements_in_attributes_and_html_comments_stay_where_they_were() -> None:
    message = html_message(
        "<!-- {% if attributes.vip %}a sponsor's note{% endif %} -->"
        '<table><tr><td class="{% if attributes.vip %}vip{% else %}plain{% endif %}">'
        "{{ first_name }}</td></tr></table>"
    )
    assert content_of(render(message, lead(vip=True)).html) == (
        '<!-- a sponsor\'s note --><table><tr><td class="vip">Ada</td></tr></table>'
    )
    assert 'class="plain"' in render(message, lead()).html


def test_links_in_rows_of_a_loop_are_tracked_and_personalized_ones_kept() -> None:
    message = html_message(
        "<table>{% for item in attributes.rows %}<tr>"
        '<td><a href="https://example.org/agenda">Agenda</a></td>'
        '<td><a href="https://example.org/{{ item }}">{{ item }}</a></td>'
        "</tr>{% endfor %}</table>"
    )
    assert message.links == ("https://example.org/agenda",)
    rendered = render(message, lead(rows=["ada", "grace"]))
    body = content_of(rendered.html)
    assert body.count('href="https://mail.example.org/c/') == 2
    assert 'href="https://example.org/ada"' in body
    assert 'href="https://example.org/grace"' in body
    assert body.count("<tr>") == 2


def test_tables_with_loops_compile_to_the_same_page_without_tracking() -> None:
    message = html_message(ROWS, tracking=False)
    rendered = render(message, lead(rows=["Ada"]))
    assert content_of(rendered.html) == "<table><tr><td>Ada</td></tr></table>"


@pytest.mark.parametrize(
    ("html_body", "code"),
    [
        ("<table>{% for item in attributes.rows %}<tr><td>{{ item }}</td></tr></table>",
         "template_syntax_error"),
        ('<table>{% for item in attributes.rows %}<tr><td><a href="javascript:alert(1)">x</a>'
         "</td></tr>{% endfor %}</table>", "invalid_link"),
        ("<table>{% for item in attributes.rows %}<tr><td>{{ item.__class__ }}</td></tr>"
         "{% endfor %}</table>", "template_sandbox_violation"),
        ("<table>{% for item in rows %}<tr><td>{{ item }}</td></tr>{% endfor %}</table>",
         "unknown_template_variable"),
    ],
)  # fmt: skip
def test_what_is_refused_at_save_is_still_refused_inside_a_table(html_body: str, code: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        validate(Content(subject="Hello", html_body=html_body))
    assert caught.value.code == code
    assert caught.value.field == "html_body"


def test_a_message_types_loop_between_rows_renders_in_place() -> None:
    message = compile_message(
        Content(subject="Your leads", html_body=ROWS),
        Brand(sponsor={"name": "ACME"}),
        preferences=False,
    )
    rendered = render(message, {"email": "rep@sponsor.example", "attributes": {"rows": ["x"]}})
    assert content_of(rendered.html) == "<table><tr><td>x</td></tr></table>"


def test_the_starter_alert_leaves_out_the_rows_of_fields_the_lead_has_none_of() -> None:
    (alert, _thank_you) = starter._types(StarterIn(team=["sales@sponsor.example"]))
    message = compile_message(
        types.content_of(alert), Brand(sponsor={"name": "ACME"}), preferences=False
    )
    data = {"lead_email": "ada@customer.example", "lead_name": "Ada", "company": "", "title": ""}
    rendered = render(message, {"email": "sales@sponsor.example", "attributes": data})
    assert "Company" not in rendered.html
    assert "Title" not in rendered.html
    assert "<strong>Email</strong>" in rendered.html


async def sent_to(fake: FakeResend, to: str) -> Any:
    async def arrived() -> Any:
        return fake.messages_to(to)

    (message,) = await eventually(arrived)
    return message


@pytest.mark.usefixtures("workers")
async def test_a_message_type_with_a_loop_between_rows_is_sent_with_its_rows(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, fake: FakeResend
) -> None:
    api = SponsorApi(client, sponsor, token)
    message_type = {
        "key": "leads.today",
        "category": "transactional",
        "subject": "Today's leads",
        "html_body": "<table>{% for lead in attributes.leads %}"
        "<tr><td>{{ lead.name }}</td><td>{{ lead.score }}</td></tr>{% endfor %}</table>",
        "variables": [{"name": "leads", "type": "list"}],
    }
    response = await client.post(api.url("/message-types"), headers=api.headers, json=message_type)
    assert response.status_code == 201, response.text
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    leads = [{"name": "Ada", "score": 92}, {"name": "Grace", "score": 88}]
    response = await client.post(
        api.url("/messages"),
        headers=api.headers,
        json={"type": "leads.today", "to": to, "data": {"leads": leads}},
    )
    assert response.status_code == 202, response.text
    sent = await sent_to(fake, to)
    assert content_of(sent.html or "") == (
        "<table><tr><td>Ada</td><td>92</td></tr><tr><td>Grace</td><td>88</td></tr></table>"
    )


def test_a_loop_between_rows_still_renders_by_filling_slots() -> None:
    message = html_message(ROWS)
    assert message.html_slots is not None
    assert message.text_slots is not None
