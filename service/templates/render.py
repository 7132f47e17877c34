"""Sponsors' templates: validated when saved, compiled once per campaign, rendered per recipient.

Safety. Templates run in Jinja2's ``ImmutableSandboxedEnvironment`` with no
globals, a whitelist of filters, ``*``/``**`` guarded against huge results, and
no ``include``/``import``/``extends``. ``validate`` rejects (422, naming the
field) syntax errors with line and column, unknown variables by name, and any
attribute or item starting with ``_`` (the way out of every known sandbox
escape); a trial render catches what only shows at run time.

Compile (once per campaign). Jinja tags are set aside behind placeholders; the
Markdown ``message_body`` becomes HTML (``markdown-it-py``, raw HTML escaped)
or ``html_body`` is taken as is; it goes into the layout (``layout.py``), whose
CSS is inlined (``css-inline``); every literal ``http(s)`` link becomes
``{{ _links[n] }}`` (n = its position in ``campaign_links``) and the open pixel
``{{ _pixel }}``, unless tracking is off. The text part comes from
``text_body`` or is derived from the HTML, with the same tracked links. Then
the placeholders get their Jinja tags back and the whole is compiled.

Render (per recipient) is three template renders over a prepared context; no
regular expression or HTML parsing runs per message. A template that is only
text and ``{{ … }}`` outputs (the usual case) renders by filling slots
(``slots.py``), exactly as Jinja would; any other stays on Jinja.
"""

from __future__ import annotations

import html
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import css_inline
from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markdown_it import MarkdownIt

from service.errors import Unprocessable
from service.templates import layout
from service.templates.slots import SlotTemplate, compile_slots
from service.templates.urls import DeliveryUrls

LEAD_VARIABLES = ("name", "first_name", "last_name", "company", "title", "email")
KNOWN_VARIABLES = frozenset(
    (*LEAD_VARIABLES, "attributes", "sponsor", "event", "unsubscribe_url", "view_in_browser_url")
)

# What a variable shows when the lead has no value for it.
FALLBACKS = {"name": "there", "first_name": "there"}

ALLOWED_FILTERS = (
    "abs",
    "capitalize",
    "d",
    "default",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "join",
    "last",
    "length",
    "lower",
    "replace",
    "round",
    "string",
    "striptags",
    "title",
    "trim",
    "truncate",
    "upper",
    "urlencode",
    "wordcount",
)

MAX_SUBJECT_BYTES = 998
# Variables a provider-side template may declare (Resend's limit).
MAX_TEMPLATE_VARIABLES = 50
# Longest string or list a template may build with ``*``.
MAX_PRODUCT = 10_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` unable to exhaust memory or CPU."""

    intercepted_binops = frozenset(("*", "**"))

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            numbers = isinstance(left, int | float) and isinstance(right, int | float)
            if numbers and abs(left) > 1 and right * math.log2(abs(left)) > 1024:
                raise SecurityError("the power is too large")
            return operator.pow(left, right)
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_PRODUCT
                ):
                    raise SecurityError("sequence too long")
            return operator.mul(left, right)
        return super().call_binop(context, op, left, right)


def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(autoescape=autoescape, keep_trailing_newline=False)
    env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
    env.filters = {name: env.filters[name] for name in ALLOWED_FILTERS}
    return env


_html_env = _environment(autoescape=True)
_text_env = _environment(autoescape=False)
# In plain text, a line holding only {% if %} should not leave an empty line behind.
_text_env.trim_blocks = _text_env.lstrip_blocks = True
_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable(
    "strikethrough"
)
_inliner = css_inline.CSSInliner(
    keep_style_tags=False, load_remote_stylesheets=False, extra_css=layout.INLINE_CSS
)


class RenderError(Exception):
    """A template failed for one recipient (the others still render)."""


# What a template can raise for one recipient's data; rendering turns them into RenderError.
_RECIPIENT_ERRORS = (TemplateError, TypeError, ValueError, ArithmeticError, LookupError)


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One recipient's message.

    Rendered ``as_json``, a body part that renders by slots comes as its JSON
    string literal (UTF-8, quotes included) in ``html_json``/``text_json``, and
    its str field is empty: a JSON API splices it in as is.
    """

    subject: str
    html: str
    text: str
    html_json: bytes | None = None
    text_json: bytes | None = None


@dataclass(frozen=True, slots=True)
class ProviderTemplate:
    """A message the provider renders: html and text with ``{{{KEY}}}`` variables.

    ``keys`` name the variables in the order ``CompiledMessage.variables`` gives
    their values: ``H<n>`` are the HTML part's slots (already escaped), ``T<n>``
    the text part's.
    """

    html: str
    text: str
    keys: tuple[str, ...]
    html_slots: SlotTemplate = field(repr=False, compare=False)
    text_slots: SlotTemplate = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Content:
    """What a sponsor wrote: a subject and a Markdown body and/or an HTML body (+ text)."""

    subject: str
    message_body: str | None = None
    html_body: str | None = None
    text_body: str | None = None


@dataclass(frozen=True, slots=True)
class Brand:
    """The campaign's constant variables: ``sponsor.*`` and ``event.*``."""

    sponsor: Mapping[str, Any]
    event: Mapping[str, Any] = field(default_factory=dict)
    lang: str = "en"


SAMPLE_LEAD: dict[str, Any] = {
    "email": "sample@example.com",
    "name": "Sam Sample",
    "first_name": "Sam",
    "last_name": "Sample",
    "company": "Example Corp",
    "title": "Head of Sampling",
    "attributes": {},
}


# ------------------------------------------------------------------ validation


def single_line(value: str) -> str:
    """Header-safe: every run of whitespace (CR and LF included) becomes one space; trimmed."""
    return " ".join(value.split())


def _column(source: str, lineno: int | None) -> int:
    """Column (1-based) of the tag Jinja choked on: the last tag opened on the line."""
    lines = source.splitlines()
    if not lineno or lineno > len(lines):
        return 1
    line = lines[lineno - 1]
    starts = [i for i in (line.rfind("{{"), line.rfind("{%"), line.rfind("{#")) if i >= 0]
    return max(starts) + 1 if starts else 1


# Format strings reach attributes by name ('{0.__class__}'): refused outright.
_FORBIDDEN_ATTRIBUTES = frozenset(("format", "format_map", "mro"))


def _sandbox_violation(ast: nodes.Template) -> str | None:
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Include, nodes.Import)):
        if isinstance(node, nodes.Getattr) and (
            node.attr.startswith("_") or node.attr in _FORBIDDEN_ATTRIBUTES
        ):
            return f"access to '{node.attr}' is not allowed"
        if isinstance(node, nodes.Getitem):
            arg = node.arg
            if isinstance(arg, nodes.Const) and str(arg.value).startswith("_"):
                return f"access to '{arg.value}' is not allowed"
        if isinstance(node, nodes.Include | nodes.Import):
            return "include and import are not allowed"
    for node in ast.find_all((nodes.FromImport, nodes.Extends)):
        return f"'{type(node).__name__.lower()}' is not allowed"
    return None


def _syntax_error(exc: TemplateSyntaxError, source: str, field: str) -> Unprocessable:
    return Unprocessable(
        "template_syntax_error",
        f"line {exc.lineno}, column {_column(source, exc.lineno)}: {exc.message}",
        field,
    )


def _check(env: _Sandbox, source: str, field: str) -> None:
    """Raise ``Unprocessable`` naming ``field`` for anything that must not be saved."""
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, source, field) from None
    violation = _sandbox_violation(ast)
    if violation:
        raise Unprocessable("template_sandbox_violation", violation, field)
    try:
        undeclared = meta.find_undeclared_variables(ast)
    except TemplateSyntaxError as exc:  # e.g. a filter not on the whitelist
        raise _syntax_error(exc, source, field) from None
    unknown = sorted(undeclared - KNOWN_VARIABLES)
    if unknown:
        raise Unprocessable(
            "unknown_template_variable",
            f"unknown variable(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(KNOWN_VARIABLES))}",
            field,
        )
    try:
        template = env.from_string(source)
    except TemplateSyntaxError as exc:  # e.g. a filter not on the whitelist
        raise _syntax_error(exc, source, field) from None
    context = personalization(SAMPLE_LEAD)
    context.update(
        sponsor={"name": "Sponsor", "postal_address": "1 Street"},
        event={},
        unsubscribe_url="https://example.com/u/x",
        view_in_browser_url="https://example.com/v/x",
    )
    try:
        template.render(context)
    except SecurityError as exc:
        raise Unprocessable("template_sandbox_violation", str(exc), field) from None
    except _RECIPIENT_ERRORS:
        pass  # data-dependent; a recipient for whom it fails fails alone


def validate(content: Content) -> None:
    """Check every part of ``content``; 422 names the first field at fault."""
    if "\r" in content.subject or "\n" in content.subject:
        raise Unprocessable("invalid_subject", "the subject must be a single line", "subject")
    if not content.subject.strip():
        raise Unprocessable("invalid_subject", "the subject must not be empty", "subject")
    if not (content.message_body or content.html_body):
        raise Unprocessable("missing_body", "give a message_body or an html_body", "message_body")
    _check(_text_env, content.subject, "subject")
    if content.message_body:
        _check(_text_env, content.message_body, "message_body")
    if content.html_body:
        _check(_html_env, content.html_body, "html_body")
    if content.text_body:
        _check(_text_env, content.text_body, "text_body")


def used_variables(content: Content) -> set[str]:
    """Variables valid content uses: names, and ``attributes.x`` for each attribute read."""
    used: set[str] = set()
    for source in (content.subject, content.message_body, content.html_body, content.text_body):
        if not source:
            continue
        ast = _html_env.parse(source)
        used |= meta.find_undeclared_variables(ast)
        for node in ast.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "attributes":
                used.add(f"attributes.{node.attr}")
    return used


# ------------------------------------------------------------------ compile


_PH_OPEN, _PH_CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_PH_OPEN}(\\d+){_PH_CLOSE}")
_HREF = re.compile(r'(<a\b[^>]*?\shref=")(https?://[^"]*)(")', re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>\"'\)\]]+")


class _Tags:
    """Jinja tags set aside behind placeholders that Markdown, HTML tools and CSS leave alone."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self.blocks: set[int] = set()

    def add(self, source: str) -> str:
        self.sources.append(source)
        index = len(self.sources) - 1
        if not source.startswith("{{"):
            self.blocks.add(index)
        return f"{_PH_OPEN}{index}{_PH_CLOSE}"

    def protect(self, source: str, on_data: Callable[[str], str] = lambda s: s) -> str:
        """``source`` with every tag run replaced by a placeholder; literal text via ``on_data``."""
        out: list[str] = []
        pending: list[str] = []
        raw = False
        for _lineno, kind, value in _text_env.lex(source):
            if kind == "data" and not raw:
                if pending:
                    out.append(self.add("".join(pending)))
                    pending = []
                out.append(on_data(value))
                continue
            if kind == "raw_begin":
                raw = True
            elif kind == "raw_end":
                raw = False
            pending.append(value)
        if pending:
            out.append(self.add("".join(pending)))
        return "".join(out)

    def restore(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.sources[int(m.group(1))], text)

    def only_blocks(self, text: str) -> bool:
        """True when ``text`` is nothing but ``{% … %}``/``{# … #}`` placeholders."""
        indexes = [int(i) for i in _PLACEHOLDER.findall(text)]
        rest = _PLACEHOLDER.sub("", text).strip()
        return bool(indexes) and not rest and all(i in self.blocks for i in indexes)


def _escape_braces_html(text: str) -> str:
    """Literal braces as character references, so none can open a Jinja tag."""
    return text.replace("{", "&#123;").replace("}", "&#125;")


_BRACE = re.compile(r"[{}]")
_BRACE_TAGS = {"{": '{{ "{" }}', "}": '{{ "}" }}'}


def _escape_braces_text(text: str) -> str:
    return _BRACE.sub(lambda m: _BRACE_TAGS[m.group(0)], text)


_BARE_URL = re.compile(r"(?<![<(\[\w/])https?://[^\s<>\"'\)\]\ue000]+(?<![.,;:!?])")
_ENCODED_PLACEHOLDER = re.compile(r"%EE%80%80(\d+)%EE%80%81")
_MEDIA_MARKER = '<meta name="x-media-css">'
_BLOCK_PARAGRAPH = re.compile(r"<p>([^<]*)</p>\n?")


def _autolink(protected: str) -> str:
    """Bare URLs as Markdown autolinks, unless a tag runs into them (personalized URLs)."""

    def link(match: re.Match[str]) -> str:
        url, end = match.group(0), match.end()
        if end < len(protected) and protected[end] == _PH_OPEN:
            return url
        return f"<{url}>"

    return _BARE_URL.sub(link, protected)


def _markdown_html(tags: _Tags, source: str) -> str:
    protected = _autolink(tags.protect(source))
    # Markdown percent-encodes the placeholders inside link targets: decode them back.
    rendered = _ENCODED_PLACEHOLDER.sub(
        lambda m: f"{_PH_OPEN}{m.group(1)}{_PH_CLOSE}", _markdown.render(protected)
    )
    # A paragraph holding only {% if %}-like tags would render as an empty <p>.
    return _BLOCK_PARAGRAPH.sub(
        lambda m: m.group(1) if tags.only_blocks(m.group(1)) else m.group(0), rendered
    )


class _TextFromHtml(HTMLParser):
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

    def handle_data(self, data: str) -> None:
        if not self._skip:
            # Line breaks come from tags (<br>, <p>, <li>); HTML source whitespace is a space.
            self.parts.append(_escape_braces_text(re.sub(r"\s+", " ", data)))

    def text(self) -> str:
        joined = "".join(self.parts)
        lines = [" ".join(line.split()) if line.strip() else "" for line in joined.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


@dataclass
class _Links:
    """The campaign's tracked targets, numbered in the order they appear."""

    tags: _Tags
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


@dataclass(frozen=True)
class CompiledMessage:
    """A campaign's subject, HTML and text templates, ready to render many times.

    ``*_slots`` are the same templates prepared for slot filling, or None where
    a template needs Jinja (see ``slots.py``).
    """

    subject_template: Any
    html_template: Any
    text_template: Any
    links: tuple[str, ...]
    constants: Mapping[str, Any]
    subject_slots: SlotTemplate | None = None
    html_slots: SlotTemplate | None = None
    text_slots: SlotTemplate | None = None

    def context(self, lead: Mapping[str, Any], urls: DeliveryUrls) -> dict[str, Any]:
        """The variables every part of the message sees for one recipient."""
        context = personalization(lead)
        context.update(self.constants)
        context["unsubscribe_url"] = urls.unsubscribe
        context["view_in_browser_url"] = urls.view_in_browser
        context["_links"] = urls.links
        context["_pixel"] = urls.open_pixel
        return context

    def provider_template(self) -> ProviderTemplate | None:
        """This message as a template the provider fills in, or None if it cannot be one.

        It can when both body parts render by slots (``slots.py``), their static
        text reads as no template tag, and they have at most
        ``MAX_TEMPLATE_VARIABLES`` slots. Substituting ``variables`` into it
        gives exactly what ``render`` gives.
        """
        if self.html_slots is None or self.text_slots is None:
            return None
        html, text = self.html_slots.mustache("H"), self.text_slots.mustache("T")
        if html is None or text is None:
            return None
        keys = tuple(f"H{n}" for n in range(self.html_slots.slot_count)) + tuple(
            f"T{n}" for n in range(self.text_slots.slot_count)
        )
        if len(keys) > MAX_TEMPLATE_VARIABLES:
            return None
        return ProviderTemplate(html, text, keys, self.html_slots, self.text_slots)

    def variables(
        self, template: ProviderTemplate, lead: Mapping[str, Any], urls: DeliveryUrls
    ) -> tuple[str, list[str]]:
        """The subject and the values of ``template.keys`` for one recipient."""
        context = self.context(lead, urls)
        try:
            subject = self._subject(context)
            values = template.html_slots.values(context) + template.text_slots.values(context)
        except _RECIPIENT_ERRORS as exc:
            raise RenderError(f"{type(exc).__name__}: {exc}") from exc
        return subject, values

    def _subject(self, context: dict[str, Any]) -> str:
        subject = single_line(_part(self.subject_slots, self.subject_template, context))
        return _cap_bytes(subject, MAX_SUBJECT_BYTES)

    def render(
        self, lead: Mapping[str, Any], urls: DeliveryUrls, *, as_json: bool = False
    ) -> RenderedMessage:
        """Render for one recipient; ``as_json``: see ``RenderedMessage``."""
        context = self.context(lead, urls)
        try:
            subject = self._subject(context)
            if as_json:
                html, html_json = _json_part(self.html_slots, self.html_template, context)
                text, text_json = _json_part(self.text_slots, self.text_template, context)
                return RenderedMessage(subject, html, text, html_json, text_json)
            return RenderedMessage(
                subject=subject,
                html=_part(self.html_slots, self.html_template, context),
                text=_part(self.text_slots, self.text_template, context),
            )
        except _RECIPIENT_ERRORS as exc:
            raise RenderError(f"{type(exc).__name__}: {exc}") from exc


def _part(slots: SlotTemplate | None, template: Any, context: dict[str, Any]) -> str:
    return slots.render(context) if slots is not None else _render(template, context)


def _json_part(
    slots: SlotTemplate | None, template: Any, context: dict[str, Any]
) -> tuple[str, bytes | None]:
    if slots is None:
        return _render(template, context), None
    return "", slots.render_json(context)


def _render(template: Any, context: dict[str, Any]) -> str:
    """``Template.render`` without its copies of the context (hot path, ~10 µs each).

    The context is built per recipient and never reused, so sharing it is safe.
    """
    return "".join(template.root_render_func(template.new_context(context, shared=True)))


def _cap_bytes(value: str, limit: int) -> str:
    encoded = value.encode()
    if len(encoded) <= limit:
        return value
    return encoded[:limit].decode(errors="ignore").rstrip()


def personalization(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a template sees for one lead.

    An empty value is left undefined (it renders as "", and ``default(...)``
    applies), except where ``FALLBACKS`` names a word to show instead.
    """
    context: dict[str, Any] = {}
    for key in LEAD_VARIABLES:
        value = lead.get(key) or FALLBACKS.get(key)
        if value:
            context[key] = value
    attributes = lead.get("attributes")
    context["attributes"] = attributes if isinstance(attributes, Mapping) else {}
    return context


def _iter_hrefs(page: str, links: _Links) -> Iterator[str]:
    last = 0
    for match in _HREF.finditer(page):
        url = html.unescape(match.group(2))
        yield page[last : match.start(2)]
        if _PH_OPEN in url:  # personalized: cannot be stored as one target
            yield match.group(2)
        else:
            yield links.add(url)
        last = match.end(2)
    yield page[last:]


def compile_message(content: Content, brand: Brand, *, tracking: bool = True) -> CompiledMessage:
    """Validate and compile; raises ``Unprocessable`` naming the field at fault."""
    validate(content)
    tags = _Tags()
    links = _Links(tags)

    if content.html_body:
        body = tags.protect(content.html_body)
    else:
        body = _markdown_html(tags, content.message_body or "")
    page = layout.SHELL.format(
        lang=html.escape(brand.lang),
        title=tags.add("{{ sponsor.name }}"),
        content=body,
        footer=tags.protect(layout.FOOTER_HTML),
        pixel=tags.protect(layout.PIXEL) if tracking else "",
    )
    page = _escape_braces_html(_inliner.inline(page))
    # Media queries only work from a <style> block, which the inliner would drop.
    style = tags.add("{% raw %}<style>" + layout.MEDIA_CSS + "</style>{% endraw %}")
    page = page.replace(_MEDIA_MARKER, style, 1)
    if tracking:
        page = "".join(_iter_hrefs(page, links))

    if content.text_body:
        text_source = tags.protect(
            content.text_body,
            lambda data: _TEXT_URL.sub(
                lambda m: links.placeholder_for(m.group(0)) if tracking else m.group(0), data
            ),
        )
    else:
        converter = _TextFromHtml(
            lambda href: links.placeholder_for(href) if tracking and _is_http(href) else href
        )
        converter.feed(body)
        converter.close()
        text_source = converter.text()
    # The empty expression keeps trim_blocks from eating the footer's first line break.
    text_source += tags.add('{{ "" }}') + tags.protect(layout.FOOTER_TEXT)

    constants = {"sponsor": dict(brand.sponsor), "event": dict(brand.event)}
    html_source, text_source = tags.restore(page), tags.restore(text_source)
    return CompiledMessage(
        subject_template=_text_env.from_string(content.subject),
        html_template=_html_env.from_string(html_source),
        text_template=_text_env.from_string(text_source),
        links=tuple(links.targets),
        constants=constants,
        subject_slots=compile_slots(_text_env, content.subject, constants, _render),
        html_slots=compile_slots(_html_env, html_source, constants, _render),
        text_slots=compile_slots(_text_env, text_source, constants, _render),
    )


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://")) and _PH_OPEN not in url
