"""A campaign's message: compiled once per campaign, rendered per recipient.

Compile (once per campaign). Jinja tags are set aside behind placeholders; the
Markdown ``message_body`` becomes HTML or ``html_body`` is taken as is
(``content.py``); it goes into the layout (``layout.py``), whose CSS is
inlined; every literal ``http(s)`` link becomes a tracked one and the open pixel
``{{ _pixel }}`` is added, unless tracking is off (``links.py``). The text part
comes from ``text_body`` or is derived from the HTML, with the same tracked
links. Then the placeholders get their Jinja tags back and the whole is compiled.

Render (per recipient) is three template renders over a prepared context; no
regular expression or HTML parsing runs per message. A template that is only
text and ``{{ … }}`` outputs (the usual case) renders by filling slots
(``slots.py``), exactly as Jinja would; any other stays on Jinja, bounded by
``sandbox.py``. A part longer than ``TEMPLATE_MAX_OUTPUT_CHARS`` fails that
recipient.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.errors import RenderError
from service.templates import layout
from service.templates.budget import bounded, check_size
from service.templates.content import (
    Brand,
    Content,
    Tags,
    inline_page,
    markdown_html,
    without_implied_tbody,
)
from service.templates.content import text_from_html as _text_from_html
from service.templates.links import TEXT_URL, Links, is_http, tracked_hrefs
from service.templates.sandbox import RECIPIENT_ERRORS, html_env, text_env
from service.templates.sandbox import render as _render
from service.templates.slots import SlotTemplate, compile_slots
from service.templates.urls import DeliveryUrls
from service.templates.validate import check_template
from service.templates.variables import personalization

MAX_SUBJECT_BYTES = 998
# Variables a provider-side template may declare (Resend's limit).
MAX_TEMPLATE_VARIABLES = 50


def single_line(value: str) -> str:
    """Header-safe: every run of whitespace (CR and LF included) becomes one space; trimmed."""
    return " ".join(value.split())


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
        context["preferences_url"] = urls.preferences
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
            check_size(sum(map(len, values)), "the message's variables")
        except RECIPIENT_ERRORS as exc:
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
            return bounded(self._render, context, as_json)
        except RECIPIENT_ERRORS as exc:
            raise RenderError(f"{type(exc).__name__}: {exc}") from exc

    def _render(self, context: dict[str, Any], as_json: bool) -> RenderedMessage:
        subject = self._subject(context)
        if as_json:
            html, html_json = _json_part(self.html_slots, self.html_template, context)
            text, text_json = _json_part(self.text_slots, self.text_template, context)
            check_size(len(html_json or html) + len(text_json or text), "the message")
            return RenderedMessage(subject, html, text, html_json, text_json)
        html = _part(self.html_slots, self.html_template, context)
        text = _part(self.text_slots, self.text_template, context)
        check_size(len(html) + len(text), "the message")
        return RenderedMessage(subject=subject, html=html, text=text)


def _part(slots: SlotTemplate | None, template: Any, context: dict[str, Any]) -> str:
    return slots.render(context) if slots is not None else _render(template, context)


def _json_part(
    slots: SlotTemplate | None, template: Any, context: dict[str, Any]
) -> tuple[str, bytes | None]:
    if slots is None:
        return _render(template, context), None
    return "", slots.render_json(context)


def _cap_bytes(value: str, limit: int) -> str:
    encoded = value.encode()
    if len(encoded) <= limit:
        return value
    return encoded[:limit].decode(errors="ignore").rstrip()


def compile_message(
    content: Content, brand: Brand, *, tracking: bool = True, preferences: bool = True
) -> CompiledMessage:
    """Check and compile; raises ``Unprocessable`` naming the field at fault.

    Saving content checks its links too (``validate``); compiling content saved
    earlier does not. ``preferences``: the footer links to the preference centre
    (False for a transactional message, which follows none).
    """
    check_template(content)
    return bounded(_compile, content, brand, tracking, preferences)


def _compile(content: Content, brand: Brand, tracking: bool, preferences: bool) -> CompiledMessage:
    footer_html, footer_text = (
        (layout.FOOTER_HTML, layout.FOOTER_TEXT)
        if preferences
        else (layout.TRANSACTIONAL_FOOTER_HTML, layout.TRANSACTIONAL_FOOTER_TEXT)
    )
    tags = Tags()
    links = Links(tags)
    if content.html_body:
        body = tags.protect(content.html_body, html=True)
    else:
        body = markdown_html(tags, content.message_body or "")
    # Not part of ``body``: the text part is derived from that, and has no preview line.
    preheader = (
        tags.protect(layout.preheader(html.escape(content.preheader))) if content.preheader else ""
    )
    start, end = tags.mark(), tags.mark()
    page = layout.SHELL.format(
        lang=html.escape(brand.lang),
        title=tags.add("{{ sponsor.name }}"),
        content=preheader + start + body + end,
        footer=tags.protect(footer_html),
        pixel=tags.protect(layout.PIXEL) if tracking else "",
    )
    page = inline_page(page, tags)
    if content.html_body and "<tbody" not in content.html_body.lower():
        page = without_implied_tbody(page, start, end)
    if tracking:
        page = tracked_hrefs(page, links)
    text_source = _text_source(content, body, links, tracking)
    # The empty expression keeps trim_blocks from eating the footer's first line break.
    text_source += tags.add('{{ "" }}') + tags.protect(footer_text)

    constants = {"sponsor": dict(brand.sponsor), "event": dict(brand.event)}
    html_source, text_source = tags.restore(page), tags.restore(text_source)
    return CompiledMessage(
        subject_template=text_env.from_string(content.subject),
        html_template=html_env.from_string(html_source),
        text_template=text_env.from_string(text_source),
        links=tuple(links.targets),
        constants=constants,
        subject_slots=compile_slots(text_env, content.subject, constants, _render),
        html_slots=compile_slots(html_env, html_source, constants, _render),
        text_slots=compile_slots(text_env, text_source, constants, _render),
    )


def _text_source(content: Content, body: str, links: Links, tracking: bool) -> str:
    """The text part's source: ``text_body`` or the body's text, links tracked alike."""
    if content.text_body:
        return links.tags.protect(
            content.text_body,
            lambda data: TEXT_URL.sub(
                lambda m: links.placeholder_for(m.group(0)) if tracking else m.group(0), data
            ),
        )
    return _text_from_html(
        body, lambda href: links.placeholder_for(href) if tracking and is_http(href) else href
    )
