"""Templates rendered by filling slots in text prepared once per campaign.

Most campaign messages are static text around a few expressions repeated many
times (``{{ name }}`` in every paragraph). Jinja evaluates, escapes and yields
every occurrence; a :class:`SlotTemplate` evaluates each distinct expression
once per recipient and puts the results into a format string prepared when the
campaign is compiled. On a 20 KB body naming two variables in ~140 paragraphs
that is a few µs instead of ~300 µs per recipient.

Exactness. The output is the one Jinja's generated code would produce, byte
for byte, and a recipient that makes Jinja fail fails with the same exception:

* a template qualifies when its top level is text, ``{{ … }}`` outputs and
  ``if``/``for`` blocks that assign nothing (no ``set``, ``macro``, ``with``,
  ``filter``, ``autoescape`` … anywhere inside); any other keeps the whole
  template on Jinja;
* an expression or block reading only campaign constants (``sponsor``,
  ``event``, literals) is rendered once, by Jinja, at compile time;
* a variable, an attribute or item with a literal key, and filters that take
  neither context nor environment with literal arguments are evaluated with the
  very callables the generated code uses: ``environment.getattr``/``getitem``
  (the sandbox's checks), ``environment.filters[…]``, ``environment.undefined``,
  then ``markupsafe.escape`` (autoescaped) or ``str``;
* any other expression or block is its own small Jinja template in the same
  sandbox, rendered per recipient.

Distinct slots are evaluated in the order they first appear, so the first one
to raise is the one Jinja would have raised on.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from jinja2 import Environment, nodes
from jinja2.utils import _PassArg
from markupsafe import escape

from service.templates.variables import LEAD_VARIABLES

__all__ = ["SlotSource", "SlotTemplate", "compile_slots"]

Context = dict[str, Any]
Evaluator = Callable[[Context], Any]
Renderer = Callable[[Any, Context], str]

_MISSING = object()

# Where a slot's text comes from, when it is a bare variable: ``("lead", field, n)``
# for a lead field (``name``, ``email`` …), ``("attribute", key, n)`` for
# ``attributes.key``, ``("url", name, n)`` for a tracking URL, where ``n`` bounds
# what ``default(...)`` may put instead; None for anything else (another filter,
# a block, a loop), whose text cannot be bounded in advance.
SlotSource = tuple[str, str, int] | None
# The variables that hold one of the delivery's URLs.
_URL_NAMES = frozenset(
    ("unsubscribe_url", "view_in_browser_url", "preferences_url", "_pixel", "_links")
)


class SlotTemplate:
    """Static pieces and one evaluator per distinct per-recipient slot, in output order.

    ``render`` evaluates the slots, then one ``itemgetter`` lays slot values and
    static pieces out in order and one ``join`` glues them: both loops run in C.
    (``str.format`` was slower, and much slower still with ``Markup`` values.)
    ``render_json`` fills one bytes format instead (see ``__init__``).
    """

    __slots__ = (
        "_json_format",
        "_json_values",
        "_layout",
        "_order",
        "_slots",
        "_statics",
        "escaped",
        "sources",
    )

    def __init__(
        self,
        pieces: list[str | int],
        slots: list[Callable[[Context], str]],
        sources: list[SlotSource] | None = None,
        escaped: bool = False,
    ) -> None:
        # Per slot, where its text comes from (``SlotSource``); whether it is HTML-escaped.
        self.sources: tuple[SlotSource, ...] = tuple(sources or [None] * len(slots))
        self.escaped = escaped
        statics: list[str] = []
        order: list[int] = []
        for piece in pieces:
            if isinstance(piece, int):
                order.append(piece)
            elif piece:
                if order and order[-1] >= len(slots):  # two static pieces in a row: merge
                    statics[-1] += piece
                else:
                    statics.append(piece)
                    order.append(len(slots) + len(statics) - 1)
        self._slots = tuple(slots)
        self._statics = statics
        self._order = tuple(order)
        # itemgetter of one index returns the item, not a 1-tuple: pad with an empty piece.
        statics.append("")
        order.append(len(slots) + len(statics) - 1)
        self._layout = operator.itemgetter(*order)
        # The same layout as a JSON string literal in UTF-8: JSON escapes character by
        # character, so the escaped pieces joined are the escaped whole. Laid out by
        # one bytes format, its static text escaped for ``%`` and ``%s`` where each
        # slot's text goes: fewer steps per piece than an itemgetter and a join.
        self._json_format = b"".join(
            [b'"']
            + [
                b"%s"
                if i < len(slots)
                else orjson.dumps(statics[i - len(slots)])[1:-1].replace(b"%", b"%%")
                for i in order
            ]
            + [b'"']
        )
        occurrences = [i for i in order if i < len(slots)]
        # itemgetter of one index returns the item, not a 1-tuple.
        self._json_values: Callable[[list[bytes]], tuple[bytes, ...]] = (
            operator.itemgetter(*occurrences)
            if len(occurrences) > 1
            else lambda values: tuple(values[i] for i in occurrences)
        )

    @property
    def slot_count(self) -> int:
        return len(self._slots)

    def render(self, context: Context) -> str:
        """The text for one recipient's context (as ``Template.render(context)``)."""
        return "".join(self._layout([slot(context) for slot in self._slots] + self._statics))

    def values(self, context: Context) -> list[str]:
        """Each slot's text for one recipient, in slot order (see ``mustache``)."""
        return [slot(context) for slot in self._slots]

    def mustache(self, prefix: str) -> str | None:
        """The static text with slot ``n`` as ``{{{<prefix><n>}}}``, or None if ambiguous.

        That is the template a provider renders (triple braces: inserted as
        given, so HTML slots go out already escaped). None when the static text
        holds ``{{`` itself or a brace touches a slot: the provider would read
        it as a tag.
        """
        n = len(self._slots)
        probe = "".join("\x00" if i < n else self._statics[i - n] for i in self._order)
        if "{{" in probe or "{\x00" in probe or "\x00}" in probe:
            return None
        return "".join(
            f"{{{{{{{prefix}{i}}}}}}}" if i < n else self._statics[i - n] for i in self._order
        )

    def render_json(self, context: Context) -> bytes:
        """``orjson.dumps(self.render(context))``, without encoding the static text again."""
        values = [orjson.dumps(slot(context))[1:-1] for slot in self._slots]
        return self._json_format % self._json_values(values)


def compile_slots(
    env: Environment,
    source: str,
    constants: Mapping[str, Any],
    render_template: Renderer,
) -> SlotTemplate | None:
    """``source`` as a :class:`SlotTemplate`, or None when it must stay on Jinja.

    ``constants`` are the campaign's fixed variables; ``render_template`` renders
    a compiled Jinja template over a context (the caller's hot-path render).
    """
    ast = env.parse(source)
    autoescape = bool(env.autoescape)
    to_text: Callable[[Any], str] = _escaped if autoescape else str
    pieces: list[str | int] = []
    slots: list[Callable[[Context], str]] = []
    sources: list[SlotSource] = []
    index: dict[str, int] = {}
    for node in ast.body:
        if isinstance(node, nodes.Output):
            parts: list[nodes.Node] = list(node.nodes)
        elif isinstance(node, _SELF_CONTAINED) and _self_contained(node):
            parts = [node]
        else:
            return None
        for part in parts:
            if isinstance(part, nodes.TemplateData):
                pieces.append(part.data)
                continue
            if _names(part) <= constants.keys():
                try:
                    value = render_template(_single(env, part), dict(constants))
                except Exception:  # fails for every recipient: Jinja reports it per recipient
                    return None
                pieces.append(value)
                continue
            key = repr(part)
            if key not in index:
                index[key] = len(slots)
                slots.append(_slot(env, part, to_text, render_template))
                sources.append(_source(part))
            pieces.append(index[key])
    return SlotTemplate(pieces, slots, sources, autoescape)


def _source(node: nodes.Node) -> SlotSource:
    """Where a bare variable's text comes from (see ``SlotSource``); None for anything else."""
    if isinstance(node, nodes.Filter) and node.name in ("default", "d") and node.node is not None:
        inner = _source(node.node)
        if inner is None or node.kwargs or not all(isinstance(a, nodes.Const) for a in node.args):
            return None
        # Escaped or not, the fallback is at most its escaped length.
        fallback = len(_escaped(_constant(node.args[0]))) if node.args else 0
        return (inner[0], inner[1], max(inner[2], fallback))
    if isinstance(node, nodes.Name):
        if node.name in LEAD_VARIABLES:
            return ("lead", node.name, 0)
        return ("url", node.name, 0) if node.name in _URL_NAMES else None
    owner = getattr(node, "node", None)
    if not isinstance(owner, nodes.Name):
        return None
    if isinstance(node, nodes.Getitem) and owner.name in _URL_NAMES:
        return ("url", owner.name, 0)
    if owner.name != "attributes":
        return None
    if isinstance(node, nodes.Getattr):
        return ("attribute", node.attr, 0)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return ("attribute", str(node.arg.value), 0)
    return None


# Statements that can render alone: they assign nothing the rest of the template sees.
_SELF_CONTAINED = (nodes.If, nodes.For)
_STATEMENTS_INSIDE = (nodes.If, nodes.For, nodes.Output)


def _self_contained(node: nodes.Node) -> bool:
    return all(isinstance(inner, _STATEMENTS_INSIDE) for inner in node.find_all(nodes.Stmt))


def _names(node: nodes.Node) -> set[str]:
    """Every variable ``node`` reads (``find_all`` leaves out the node itself)."""
    found = {name.name for name in node.find_all(nodes.Name)}
    if isinstance(node, nodes.Name):
        found.add(node.name)
    return found


def _single(env: Environment, node: nodes.Node) -> Any:
    """A template of just ``node`` (an expression is wrapped in an output), compiled in ``env``."""
    if isinstance(node, nodes.Expr):
        node = nodes.Output([node], lineno=node.lineno)
    template = nodes.Template([node], lineno=1)
    template.set_environment(env)
    return env.from_string(template)  # Jinja compiles a parsed AST as well as text


def _escaped(value: Any) -> str:
    """``markupsafe.escape(value)`` as a plain ``str``: the same text (a slot's text is only
    joined or sent), without building a ``Markup``, which cost 12 times the escaping."""
    if type(value) is str:  # markupsafe's own replacements, in its order
        return (
            value.replace("&", "&amp;")
            .replace(">", "&gt;")
            .replace("<", "&lt;")
            .replace("'", "&#39;")
            .replace('"', "&#34;")
        )
    return str(escape(value))


def _slot(
    env: Environment,
    expression: nodes.Node,
    to_text: Callable[[Any], str],
    render_template: Renderer,
) -> Callable[[Context], str]:
    evaluate = _evaluator(env, expression)
    if evaluate is not None:
        found = evaluate
        return lambda context: to_text(found(context))
    template = _single(env, expression)
    return lambda context: render_template(template, context)


def _evaluator(env: Environment, node: nodes.Node) -> Evaluator | None:
    """Python doing what Jinja's generated code does for ``node``, or None if unsupported."""
    if isinstance(node, nodes.Name) and node.ctx == "load":
        name, undefined = node.name, env.undefined

        def variable(context: Context) -> Any:
            value = context.get(name, _MISSING)
            return undefined(name=name) if value is _MISSING else value

        return variable
    if isinstance(node, nodes.Getattr) and node.ctx == "load":
        owner = _evaluator(env, node.node)
        if owner is None:
            return None
        attribute, get_attribute = node.attr, env.getattr
        return lambda context: get_attribute(owner(context), attribute)
    if isinstance(node, nodes.Getitem) and node.ctx == "load" and isinstance(node.arg, nodes.Const):
        container = _evaluator(env, node.node)
        if container is None:
            return None
        key, get_item = node.arg.value, env.getitem
        return lambda context: get_item(container(context), key)
    if isinstance(node, nodes.Filter):
        return _filter(env, node)
    return None


def _filter(env: Environment, node: nodes.Filter) -> Evaluator | None:
    function = env.filters.get(node.name)
    if (
        function is None
        or _PassArg.from_obj(function) is not None
        or node.node is None
        or node.dyn_args is not None
        or node.dyn_kwargs is not None
        or not all(isinstance(arg, nodes.Const) for arg in node.args)
        or not all(isinstance(kw.value, nodes.Const) for kw in node.kwargs)
    ):
        return None
    inner = _evaluator(env, node.node)
    if inner is None:
        return None
    args = tuple(_constant(arg) for arg in node.args)
    kwargs = {str(kw.key): _constant(kw.value) for kw in node.kwargs}
    return lambda context: function(inner(context), *args, **kwargs)


def _constant(node: nodes.Node) -> Any:
    assert isinstance(node, nodes.Const)
    return node.value
