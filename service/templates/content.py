"""What a sponsor wrote, and its conversions: Markdown → HTML, HTML → text, CSS inlining.

Jinja tags must survive Markdown, the HTML parser and the CSS inliner: ``Tags``
sets them aside behind private-use placeholders first and puts them back last.
In HTML, a statement (``{% for %}``, ``{% if %}``, ``{# … #}``) between markup
is put aside as an HTML comment: a parser moves text that sits where a table
allows none (between rows, cells) out of the table ("foster parenting"), which
would tear a loop away from the rows it repeats, but keeps a comment in place.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import css_inline
from markdown_it import MarkdownIt

from service.templates import layout
from service.templates.sandbox import text_env


@dataclass(frozen=True, slots=True)
class Content:
    """What a sponsor wrote: a subject and a Markdown body and/or an HTML body (+ text)."""

    subject: str
    message_body: str | None = None
    html_body: str | None = None
    text_body: str | None = None
    # The inbox's preview line (an A/B variant's), hidden at the top of the HTML part.
    preheader: str | None = None


@dataclass(frozen=True, slots=True)
class Brand:
    """The campaign's constant variables: ``sponsor.*`` and ``event.*``."""

    sponsor: Mapping[str, Any]
    event: Mapping[str, Any] = field(default_factory=dict)
    lang: str = "en"


PH_OPEN, PH_CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{PH_OPEN}(\\d+){PH_CLOSE}")
# A placeholder as an HTML comment, restored with its comment delimiters.
_ANY_PLACEHOLDER = re.compile(f"<!--{PH_OPEN}(\\d+){PH_CLOSE}-->|{PH_OPEN}(\\d+){PH_CLOSE}")
_STATEMENT_KINDS = frozenset(("block_begin", "comment_begin", "raw_begin"))

_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable(
    "strikethrough"
)
_inliner = css_inline.CSSInliner(
    keep_style_tags=False, load_remote_stylesheets=False, extra_css=layout.INLINE_CSS
)


class Tags:
    """Jinja tags set aside behind placeholders that Markdown, HTML tools and CSS leave alone."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self.blocks: set[int] = set()

    def add(self, source: str) -> str:
        self.sources.append(source)
        index = len(self.sources) - 1
        if not source.startswith("{{"):
            self.blocks.add(index)
        return f"{PH_OPEN}{index}{PH_CLOSE}"

    def mark(self) -> str:
        """An HTML comment that HTML tools keep where it is and that restores to nothing."""
        return f"<!--{self.add('')}-->"

    def protect(
        self, source: str, on_data: Callable[[str], str] = lambda s: s, *, html: bool = False
    ) -> str:
        """``source`` with every tag run replaced by a placeholder; literal text via ``on_data``.

        ``html``: ``source`` is HTML, whose statements between markup become comments.
        """
        out: list[str] = []
        pending: list[str] = []
        statement = raw = False
        position = _HtmlPosition() if html else None
        for _lineno, kind, value in text_env.lex(source):
            if kind == "data" and not raw:
                if pending:
                    as_comment = statement and position is not None and position.in_text
                    out.append(self._run(pending, as_comment))
                    pending, statement = [], False
                if position is not None:
                    position.feed(value)
                out.append(on_data(value))
                continue
            statement = statement or kind in _STATEMENT_KINDS
            if kind == "raw_begin":
                raw = True
            elif kind == "raw_end":
                raw = False
            pending.append(value)
        if pending:
            as_comment = statement and position is not None and position.in_text
            out.append(self._run(pending, as_comment))
        return "".join(out)

    def _run(self, pending: list[str], as_comment: bool) -> str:
        placeholder = self.add("".join(pending))
        return f"<!--{placeholder}-->" if as_comment else placeholder

    def restore(self, text: str) -> str:
        return _ANY_PLACEHOLDER.sub(lambda m: self.sources[int(m.group(1) or m.group(2))], text)

    def only_blocks(self, text: str) -> bool:
        """True when ``text`` is nothing but ``{% … %}``/``{# … #}`` placeholders."""
        indexes = [int(i) for i in _PLACEHOLDER.findall(text)]
        rest = _PLACEHOLDER.sub("", text).strip()
        return bool(indexes) and not rest and all(i in self.blocks for i in indexes)


_MARKUP = re.compile(r"<!--|-->|</?([a-zA-Z][a-zA-Z0-9-]*)|>")
# Elements whose content is text to the parser, where a comment would be literal text.
_RAW_TEXT = frozenset(("script", "style", "textarea", "title"))


class _HtmlPosition:
    """Where the HTML read so far ends: in text (between markup), or inside a tag,
    a comment or a raw-text element, where a comment placeholder cannot go.

    A ``>`` inside a quoted attribute value reads as the tag's end; a placeholder
    comment that lands in the value then stays there as text and is restored alike.
    """

    def __init__(self) -> None:
        self.state = "text"
        self.element = ""

    @property
    def in_text(self) -> bool:
        return self.state == "text"

    def feed(self, data: str) -> None:
        for match in _MARKUP.finditer(data):
            markup, name = match.group(0), (match.group(1) or "").lower()
            if self.state == "comment":
                self.state = "text" if markup == "-->" else "comment"
            elif self.state == "tag":
                if markup == ">":
                    self.state = "raw" if self.element else "text"
            elif self.state == "raw":
                if markup.startswith("</") and name == self.element:
                    self.state, self.element = "tag", ""
            elif markup == "<!--":
                self.state = "comment"
            elif name:
                self.state = "tag"
                self.element = name if name in _RAW_TEXT and markup[1] != "/" else ""


def escape_braces_html(text: str) -> str:
    """Literal braces as character references, so none can open a Jinja tag."""
    return text.replace("{", "&#123;").replace("}", "&#125;")


_BRACE = re.compile(r"[{}]")
_BRACE_TAGS = {"{": '{{ "{" }}', "}": '{{ "}" }}'}


def _escape_braces_text(text: str) -> str:
    return _BRACE.sub(lambda m: _BRACE_TAGS[m.group(0)], text)


_BARE_URL = re.compile(r"(?<![<(\[\w/])https?://[^\s<>\"'\)\]\ue000]+(?<![.,;:!?])")
_ENCODED_PLACEHOLDER = re.compile(r"%EE%80%80(\d+)%EE%80%81")
_BLOCK_PARAGRAPH = re.compile(r"<p>([^<]*)</p>\n?")
_MEDIA_MARKER = '<meta name="x-media-css">'


def _autolink(protected: str) -> str:
    """Bare URLs as Markdown autolinks, unless a tag runs into them (personalized URLs)."""

    def link(match: re.Match[str]) -> str:
        url, end = match.group(0), match.end()
        if end < len(protected) and protected[end] == PH_OPEN:
            return url
        return f"<{url}>"

    return _BARE_URL.sub(link, protected)


def markdown_html(tags: Tags, source: str) -> str:
    """The Markdown ``source`` as HTML, its Jinja tags behind ``tags``' placeholders."""
    protected = _autolink(tags.protect(source))
    # Markdown percent-encodes the placeholders inside link targets: decode them back.
    rendered = _ENCODED_PLACEHOLDER.sub(
        lambda m: f"{PH_OPEN}{m.group(1)}{PH_CLOSE}", _markdown.render(protected)
    )
    # A paragraph holding only {% if %}-like tags would render as an empty <p>.
    return _BLOCK_PARAGRAPH.sub(
        lambda m: m.group(1) if tags.only_blocks(m.group(1)) else m.group(0), rendered
    )


def inline_page(page: str, tags: Tags) -> str:
    """The page with its CSS inlined, literal braces escaped and the media queries kept."""
    page = escape_braces_html(_inliner.inline(page))
    # Media queries only work from a <style> block, which the inliner would drop.
    style = tags.add("{% raw %}<style>" + layout.MEDIA_CSS + "</style>{% endraw %}")
    return page.replace(_MEDIA_MARKER, style, 1)


_TBODY = re.compile(r"</?tbody>")


def without_implied_tbody(page: str, start: str, end: str) -> str:
    """``page`` without ``<tbody>`` tags between the markers ``start`` and ``end``.

    For HTML that wrote none: the parser adds a ``<tbody>`` at a table's first row,
    after a loop's opening comment, so each repetition would open one more; a
    reader adds it again at the same place in the rendered rows.
    """
    begin = page.find(start)
    finish = page.find(end, begin)
    if begin < 0 or finish < 0:  # markup that closed the layout's cells moved a marker
        return page
    return page[:begin] + _TBODY.sub("", page[begin:finish]) + page[finish:]


class TextFromHtml(HTMLParser):
    """The readable text of an HTML fragment; links as ``label (url)``."""

    _BLOCKS = frozenset(("p", "div", "table", "tr", "h1", "h2", "h3", "h4", "ul", "ol", "hr"))

    def __init__(self, link_for: Callable[[str], str]) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.link_for = link_for
        self._href: list[str | None] = []
        self._label_start: list[int] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.parts.append(alt)
        elif tag == "a":
            self._href.append(dict(attrs).get("href"))
            self._label_start.append(len(self.parts))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self._href:
            href = self._href.pop()
            start = self._label_start.pop()
            label = html.unescape("".join(self.parts[start:])).strip()
            if href and not href.startswith(("mailto:", "#")):
                target = self.link_for(href)
                if label and label != href:
                    self.parts.append(f" ({target})")
                else:
                    del self.parts[start:]
                    self.parts.append(target)

    def handle_comment(self, data: str) -> None:
        if _PLACEHOLDER.fullmatch(data):  # a statement set aside as a comment (``Tags``)
            self.parts.append(data)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            # Line breaks come from tags (<br>, <p>, <li>); HTML source whitespace is a space.
            self.parts.append(_escape_braces_text(re.sub(r"\s+", " ", data)))

    def text(self) -> str:
        joined = "".join(self.parts)
        lines = [" ".join(line.split()) if line.strip() else "" for line in joined.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def text_from_html(body: str, link_for: Callable[[str], str]) -> str:
    """The text part derived from an HTML body; each link's target through ``link_for``."""
    converter = TextFromHtml(link_for)
    converter.feed(body)
    converter.close()
    return converter.text()
