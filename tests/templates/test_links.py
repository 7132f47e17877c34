"""Links are checked at save: no click may end in a broken or dangerous response."""

from __future__ import annotations

import httpx
import pytest

from service.errors import Unprocessable
from service.templates.compiled import compile_message
from service.templates.content import Brand, Content
from service.templates.validate import validate
from tests import factories
from tests.conftest import TokenFactory

REFUSED = {
    "CR LF in an href": ("html_body", '<a href="https://example.com/&#13;&#10;Set-Cookie:x">x</a>'),
    "a raw line feed in an href": ("html_body", '<a href="https://example.com/a\nb">x</a>'),
    "NUL in an href": ("html_body", '<a href="https://example.com/\x00">x</a>'),
    "a tab in an href": ("html_body", '<a href="https://exa\tmple.com/">x</a>'),
    "javascript scheme": ("html_body", '<a href="javascript:alert(1)">x</a>'),
    "data scheme": ("html_body", '<a href="data:text/html,hi">x</a>'),
    "relative link": ("html_body", '<a href="/account">x</a>'),
    "an area href": ("html_body", '<map><area href="file:///etc/passwd"></map>'),
    "ftp link in Markdown": ("message_body", "[files](ftp://example.com/f)"),
    "control character in a text URL": ("text_body", "see https://example.com/\x01x"),
}


@pytest.mark.parametrize("field,body", REFUSED.values(), ids=REFUSED.keys())
def test_a_link_no_click_should_follow_is_refused_when_saved(field: str, body: str) -> None:
    content = {"message_body": "Hello", field: body}
    with pytest.raises(Unprocessable) as caught:
        validate(Content(subject="Hi", **content))
    assert caught.value.status_code == 422
    assert caught.value.code == "invalid_link"
    assert caught.value.field == field


ACCEPTED = [
    '<a href="https://example.com/a?b=1&amp;c=2">web</a>',
    '<a href="HTTP://EXAMPLE.COM/">upper case</a>',
    '<a href="mailto:team@example.com">mail</a>',
    '<a href="#top">anchor</a>',
    '<a href="{{ attributes.booking_url }}">their own link</a>',
    '<a href="https://example.com/?who={{ email | urlencode }}">personalized</a>',
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_http_https_mailto_anchors_and_personalized_links_are_accepted(body: str) -> None:
    validate(Content(subject="Hi", html_body=body))


def test_content_saved_before_the_link_rules_still_compiles_and_sends() -> None:
    content = Content(subject="Hi", html_body='<a href="tel:+4930123">call us</a>')
    message = compile_message(content, Brand(sponsor={"name": "ACME"}))
    assert message.links == ()


async def test_a_campaign_with_a_header_splitting_link_is_refused_with_code_field_and_reason(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    body = factories.campaign(
        draft=True, html_body='<p><a href="https://example.com/%0D&#10;x">offer</a></p>'
    )
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token(sponsor), json=body
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_link"
    assert error["field"] == "html_body"
    assert "control characters" in error["message"]


async def test_a_template_with_a_javascript_link_is_refused(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/templates",
        headers=token(sponsor),
        json={
            "name": "T",
            "subject": "Hi",
            "message_body": "Hi",
            "html_body": ('<a href=" javascript:alert(1)">x</a>'),
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_link"
    assert "'javascript' is not allowed" in response.json()["error"]["message"]
