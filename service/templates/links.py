"""The links of a message: checked when saved, numbered and made trackable when compiled.

At save, every link target a body holds (``<a href>`` in HTML, links in
Markdown, ``http(s)`` URLs in the text part) must be an ``http``, ``https`` or
``mailto`` URL without control characters: a click on anything else would end in
a broken redirect (a CR or LF splits the ``Location`` header), or somewhere no
newsletter link should go (``javascript:``, ``data:``, ``file:``). A target that
starts with a template expression is the recipient's data: only its literal
characters are checked.

At compile, every literal ``http(s)`` link becomes ``{{ _links[n] }}`` (n = its
position in ``campaign_links``), which the tracking endpoints redirect to.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

from service.errors import Unprocessable
from service.templates.content import PH_OPEN, Content, Tags, markdown_html

_HREF = re.compile(r'(<a\b[^>]*?\shref=")(https?://[^"]*)(")', re.IGNORECASE)
TEXT_URL = re.compile(r"https?://[^\s<>\"'\)\]]+")

ALLOWED_SCHEMES = ("http", "https", "mailto")
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Links:
    """The campaign's tracked targets, numbered in the order they appear."""

    tags: Tags
    targets: list[str] = field(default_factory=list)
    first: dict[str, int] = field(default_factory=dict)

    def add(self, url: str) -> str:
        self.targets.append(url)
        position = len(self.targets) - 1
        self.first.setdefault(url, position)
        return self.tags.add(f"{{{{ _links[{position}] }}}}")

    def placeholder_for(self, url: str) -> str:
        position = self.first.get(url)
        if position is None:
            return self.add(url)
        return self.tags.add(f"{{{{ _links[{position}] }}}}")


def tracked_hrefs(page: str, links: Links) -> str:
    """``page`` with every literal ``http(s)`` href behind a ``_links[n]`` placeholder."""
    return "".join(_iter_hrefs(page, links))


def _iter_hrefs(page: str, links: Links) -> Iterator[str]:
    last = 0
    for match in _HREF.finditer(page):
        url = html.unescape(match.group(2))
        yield page[last : match.start(2)]
        if PH_OPEN in url:  # personalized: cannot be stored as one target
            yield match.group(2)
        else:
            yield links.add(url)
        last = match.end(2)
    yield page[last:]


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://")) and PH_OPEN not in url


# ------------------------------------------------------------------ checked at save


class _Hrefs(HTMLParser):
    """Every ``href`` of ``<a>`` and ``<area>``, character references decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            self.found.extend(value for name, value in attrs if name == "href" and value)


def _hrefs(body_html: str) -> list[str]:
    parser = _Hrefs()
    parser.feed(body_html)
    parser.close()
    return parser.found


def link_problem(url: str) -> str | None:
    """Why ``url`` cannot be a link target, or None; placeholders stand for template tags."""
    literal = url.strip()
    if _CONTROL.search(literal.replace(PH_OPEN, "").replace("\ue001", "")):
        return "control characters (CR, LF, NUL…) are not allowed in a link"
    if not literal or literal.startswith((PH_OPEN, "#")):
        return None  # the recipient's data, or a place in the message itself
    scheme = _SCHEME.match(literal)
    if scheme is None:
        return "a link must be an absolute http, https or mailto URL"
    if scheme.group(1).lower() not in ALLOWED_SCHEMES:
        return f"the link scheme '{scheme.group(1)}' is not allowed (only http, https, mailto)"
    return None


def _refuse(url: str, problem: str, field_name: str) -> Unprocessable:
    shown = url if len(url) <= 80 else url[:77] + "..."
    return Unprocessable("invalid_link", f"{problem}: {shown!r}", field_name)


def check_links(content: Content) -> None:
    """Raise 422 naming the field of the first link no click should follow."""
    bodies: list[tuple[str, list[str]]] = []
    if content.html_body:
        bodies.append(("html_body", _hrefs(Tags().protect(content.html_body))))
    if content.message_body:
        bodies.append(("message_body", _hrefs(markdown_html(Tags(), content.message_body))))
    if content.text_body:
        bodies.append(("text_body", TEXT_URL.findall(content.text_body)))
    for field_name, urls in bodies:
        for url in urls:
            problem = link_problem(url)
            if problem:
                raise _refuse(url, problem, field_name)
