"""Sponsors' templates, compiled once per campaign, rendered once per recipient.

Templates run in Jinja2's ``SandboxedEnvironment``: no attribute access to
internals, no sponsor code. The HTML part autoescapes every variable; the
subject and text part are plain text. ``message_body`` is plain text whose
blank lines separate paragraphs; its literal text is escaped and wrapped in
``<p>`` for the HTML part at compile time, so rendering does no post-processing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from service.errors import Unprocessable

LEAD_VARIABLES = ("name", "first_name", "last_name", "company", "title", "email")
KNOWN_VARIABLES = frozenset((*LEAD_VARIABLES, "attributes"))

# What a variable shows when the lead has no value for it.
FALLBACKS = {"name": "there", "first_name": "there"}

_html_env = SandboxedEnvironment(autoescape=True, keep_trailing_newline=False)
_text_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class RenderError(Exception):
    """A template failed for one recipient (the others still render)."""


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    html: str
    text: str


def _check(env: SandboxedEnvironment, source: str, field: str) -> nodes.Template:
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        raise Unprocessable(
            "template_syntax_error", f"line {exc.lineno}: {exc.message}", field
        ) from None
    unknown = sorted(meta.find_undeclared_variables(ast) - KNOWN_VARIABLES)
    if unknown:
        raise Unprocessable(
            "unknown_template_variable",
            f"unknown variable(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(KNOWN_VARIABLES))}",
            field,
        )
    return ast


def text_to_html_source(source: str) -> str:
    """Turn a plain-text template into an HTML template: escape and paragraph its literal text.

    Only ``data`` tokens (literal text) change; tags and expressions stay as written.
    """
    parts: list[str] = []
    for _lineno, kind, value in _text_env.lex(source):
        if kind == "data":
            escaped = html.escape(value, quote=False)
            escaped = escaped.replace("\r\n", "\n").replace("\n\n", "</p>\n<p>")
            parts.append(escaped.replace("\n", "<br>\n").replace("</p><br>\n<p>", "</p>\n<p>"))
        else:
            parts.append(value)
    return f"<p>{''.join(parts).strip()}</p>"


@dataclass(frozen=True)
class CompiledMessage:
    """A campaign's subject, HTML and text templates, ready to render many times."""

    subject_template: Any
    html_template: Any
    text_template: Any

    def render(self, lead: Mapping[str, Any]) -> RenderedMessage:
        context = personalization(lead)
        try:
            subject = " ".join(self.subject_template.render(context).split())
            return RenderedMessage(
                subject=subject,
                html=self.html_template.render(context),
                text=self.text_template.render(context),
            )
        except (SecurityError, UndefinedError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(f"{type(exc).__name__}: {exc}") from exc


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


def compile_message(
    subject: str, message_body: str, html_body: str | None = None
) -> CompiledMessage:
    """Validate and compile; raises ``Unprocessable`` naming the field at fault."""
    if "\r" in subject or "\n" in subject:
        raise Unprocessable("invalid_subject", "the subject must be a single line", "subject")
    _check(_text_env, subject, "subject")
    _check(_text_env, message_body, "message_body")
    html_source = html_body if html_body is not None else text_to_html_source(message_body)
    _check(_html_env, html_source, "html_body" if html_body is not None else "message_body")
    return CompiledMessage(
        subject_template=_text_env.from_string(subject),
        html_template=_html_env.from_string(html_source),
        text_template=_text_env.from_string(message_body),
    )
