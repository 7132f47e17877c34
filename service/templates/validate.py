"""What a template must be to be saved: checked once, when a sponsor saves or previews it.

``validate`` rejects (422, naming the field) syntax errors with line and column,
unknown variables by name, any attribute or item starting with ``_`` (the way
out of every known sandbox escape), ``include``/``import``/``extends``, links no
click should follow (``links.py``), and, from a trial render with a sample lead,
whatever only shows at run time: a sandbox violation, such as a template that
costs more than one render may (``sandbox.py``). An error that depends on a
recipient's data is left to that recipient's render.
"""

from __future__ import annotations

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError

from service.errors import Unprocessable
from service.templates.budget import bounded
from service.templates.content import Content
from service.templates.links import check_links
from service.templates.sandbox import (
    RECIPIENT_ERRORS,
    Sandbox,
    html_env,
    render,
    text_env,
)
from service.templates.variables import KNOWN_VARIABLES, SAMPLE_LEAD, personalization


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


def _sample_context() -> dict[str, object]:
    context: dict[str, object] = personalization(SAMPLE_LEAD)
    context.update(
        sponsor={"name": "Sponsor", "postal_address": "1 Street"},
        event={},
        unsubscribe_url="https://example.com/u/x",
        view_in_browser_url="https://example.com/v/x",
        preferences_url="https://example.com/preferences/x",
        preferences={"opted_out": False, "frequency": "immediately", "format": "detailed"},
    )
    return context


def _check(env: Sandbox, source: str, field: str) -> None:
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
    try:
        render(template, _sample_context())
    except SecurityError as exc:
        raise Unprocessable("template_sandbox_violation", str(exc), field) from None
    except RECIPIENT_ERRORS:
        pass  # data-dependent; a recipient for whom it fails fails alone


def validate(content: Content) -> None:
    """Check every part of ``content`` before it is saved; 422 names the first field at fault.

    The trial renders of all parts share one deadline (``TEMPLATE_RENDER_SECONDS``).
    """
    check_template(content)
    check_links(content)


def check_template(content: Content) -> None:
    """``validate`` without the link rules, which apply to what is saved from now on:
    content saved before them still compiles and sends."""
    bounded(_validate, content)


def _validate(content: Content) -> None:
    if "\r" in content.subject or "\n" in content.subject:
        raise Unprocessable("invalid_subject", "the subject must be a single line", "subject")
    if not content.subject.strip():
        raise Unprocessable("invalid_subject", "the subject must not be empty", "subject")
    if not (content.message_body or content.html_body):
        raise Unprocessable("missing_body", "give a message_body or an html_body", "message_body")
    _check(text_env, content.subject, "subject")
    if content.message_body:
        _check(text_env, content.message_body, "message_body")
    if content.html_body:
        _check(html_env, content.html_body, "html_body")
    if content.text_body:
        _check(text_env, content.text_body, "text_body")


def used_variables(content: Content) -> set[str]:
    """Variables valid content uses: names, and ``attributes.x`` for each attribute read."""
    used: set[str] = set()
    for source in (content.subject, content.message_body, content.html_body, content.text_body):
        if not source:
            continue
        ast = html_env.parse(source)
        used |= meta.find_undeclared_variables(ast)
        for node in ast.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "attributes":
                used.add(f"attributes.{node.attr}")
    return used
