"""The sandbox sponsors' templates run in.

Templates run in Jinja2's ``ImmutableSandboxedEnvironment`` with no globals
(no ``range``, ``lipsum``, ``namespace``…), a whitelist of filters and no
``include``/``import``/``extends``. A template is untrusted code, so every way it
can spend memory or CPU goes through one of three checkpoints:

* **values**: every operation that can build a value much larger than its
  inputs is checked *before* it runs: ``*`` and ``**`` (sequence length, number
  size), ``%`` formatting (field widths), the ``replace`` and ``join`` filters and
  the string methods ``center``/``ljust``/``rjust``/``zfill``/``expandtabs``/
  ``replace``/``join`` (result size); ``str.format`` is refused, its fields can
  reach attributes;
* **time and depth**: every call (macros, ``caller()``, recursive ``loop(…)``,
  methods) and every loop iteration checks the render's deadline, and calls may
  nest only ``MAX_CALL_DEPTH`` deep;
* **output**: ``render`` streams the template and stops past
  ``limits.max_output_chars``.

Over a limit is a ``TemplateLimitError`` (a ``SecurityError``, see
``budget.py`` for what one render may cost): refused at save, that one
recipient fails at send. Everything is checked on the rendering thread,
so a normal render pays a counter per output chunk and nothing per expression
(slot-filled parts, ``slots.py``, do not run Jinja at all).
"""

from __future__ import annotations

import asyncio
import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.filters import do_join, do_replace
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

from service.errors import Unprocessable
from service.templates.budget import (
    Budget,
    TemplateLimitError,
    budget,
    check_size,
    limits,
    render_budget,
)

P = ParamSpec("P")
T = TypeVar("T")

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

# Longest string or list a template may build with ``*``.
MAX_PRODUCT = 10_000
# Largest number (in bits) ``*`` or ``**`` may build.
MAX_NUMBER_BITS = 1024
# How deep macro calls, ``caller()`` and recursive loops may nest.
MAX_CALL_DEPTH = 20

# What a template can raise for one recipient's data; rendering turns them into RenderError.
RECIPIENT_ERRORS = (
    TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    RecursionError,
)


# ------------------------------------------------------------------ values

# A %-format field: flags, then width and precision, which may be ``*`` (from the arguments).
_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?")


def _check_percent(spec: str) -> None:
    for width, precision in _PERCENT_FIELD.findall(spec):
        for number in (width, precision):
            if number == "*":
                raise TemplateLimitError("'*' widths in % formatting are not allowed")
            if number:
                check_size(int(number), "a % formatting field")


def _check_replace(s: str, old: str, new: str, count: int | None = None) -> None:
    growth = len(new) - len(old)
    if growth <= 0:
        return
    found = len(s) + 1 if not old else s.count(old)
    if count is not None and count >= 0:
        found = min(found, count)
    check_size(len(s) + found * growth, "the replaced string")


def _joined(separator: str, items: Iterable[Any]) -> list[Any]:
    """``items`` as a list, after checking what joining them would build."""
    listed = list(items)
    size = sum(len(item) if isinstance(item, str) else 16 for item in listed)
    check_size(size + len(separator) * max(0, len(listed) - 1), "the joined string")
    return listed


_PADDING = frozenset(("center", "ljust", "rjust", "zfill"))


def _check_str_method(owner: str, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Raise if calling ``owner.name(*args)`` would build too much; the args to call with."""
    if name in ("format", "format_map"):
        raise TemplateLimitError("str.format is not allowed")
    if name in _PADDING and args and isinstance(args[0], int):
        check_size(args[0], f"str.{name}")
    elif name == "expandtabs":
        tabsize = args[0] if args and isinstance(args[0], int) else 8
        check_size(len(owner) * max(tabsize, 1), "str.expandtabs")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else None
        _check_replace(owner, str(args[0]), str(args[1]), count)
    elif name == "join" and args:
        return (_joined(owner, args[0]), *args[1:])
    return args


@pass_eval_context
def _replace_filter(
    eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None
) -> str:
    _check_replace(str(s), str(old), str(new), count)
    return do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join_filter(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    if attribute is None:
        value = _joined(str(d), value)
    joined: str = do_join(eval_ctx, value, d, attribute)
    return joined


# ------------------------------------------------------------------ the environment


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with the checkpoints described in the module docstring."""

    intercepted_binops = frozenset(("*", "**", "%"))

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            numbers = isinstance(left, int | float) and isinstance(right, int | float)
            if numbers and abs(left) > 1 and right * math.log2(abs(left)) > MAX_NUMBER_BITS:
                raise TemplateLimitError("the power is too large")
            return operator.pow(left, right)
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_PRODUCT
                ):
                    raise TemplateLimitError("sequence too long")
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and left.bit_length() + right.bit_length() > MAX_NUMBER_BITS:
                raise TemplateLimitError("the number is too large")
            return operator.mul(left, right)
        if op == "%" and isinstance(left, str):
            _check_percent(left)
            return operator.mod(left, right)
        return super().call_binop(context, op, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            args = _check_str_method(owner, getattr(__obj, "__name__", ""), args)
        for value in args:
            if isinstance(value, str):
                check_size(len(value), "a value passed to a call")
        current = budget()
        current.check_time()
        if current.depth >= MAX_CALL_DEPTH:
            raise TemplateLimitError(f"calls nest more than {MAX_CALL_DEPTH} deep")
        current.depth += 1
        try:
            return super().call(__context, __obj, *args, **kwargs)
        finally:
            current.depth -= 1

    def guarded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """A ``for`` loop's items, checking the render's deadline as it goes."""
        current = budget()
        for n, item in enumerate(iterable):
            if not n & 63:
                current.check_time()
            yield item

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Every ``for`` loop iterates through ``guarded_iter`` (parsed once per template)."""
        ast = super()._parse(source, name, filename)
        for loop in ast.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("guarded_iter", lineno=loop.lineno),
                [loop.iter],
                [],
                None,
                None,
                lineno=loop.lineno,
            )
        return ast


def _environment(autoescape: bool) -> Sandbox:
    env = Sandbox(autoescape=autoescape, keep_trailing_newline=False)
    env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
    env.filters = {name: env.filters[name] for name in ALLOWED_FILTERS}
    env.filters["replace"] = _replace_filter
    env.filters["join"] = _join_filter
    return env


html_env = _environment(autoescape=True)
text_env = _environment(autoescape=False)
# In plain text, a line holding only {% if %} should not leave an empty line behind.
text_env.trim_blocks = text_env.lstrip_blocks = True


def render(template: Any, context: dict[str, Any]) -> str:
    """``Template.render`` streamed up to the output limit, without copying the context.

    The context is built per recipient and never reused, so sharing it is safe.
    """
    token = (
        render_budget.set(Budget(limits.render_seconds)) if render_budget.get() is None else None
    )
    try:
        chunks: list[str] = []
        size, limit = 0, limits.max_output_chars
        for chunk in template.root_render_func(template.new_context(context, shared=True)):
            size += len(chunk)
            if size > limit:
                check_size(size, "the rendered text")
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        if token is not None:
            render_budget.reset(token)


# ------------------------------------------------------------------ off the event loop

# A few threads: a burst of worst-case templates queues here, not in the loop's default
# executor that the rest of the process shares.
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="template")


async def off_loop(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args)`` on a template thread, so the event loop answers meanwhile.

    Untrusted rendering (checks at save, previews, the view-in-browser page) runs
    here; the render deadline stops the work itself, and the wait is a backstop
    for what runs outside a render (Markdown, CSS inlining of a large body).
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_pool, functools.partial(function, *args, **kwargs))
    try:
        return await asyncio.wait_for(future, timeout=2 * limits.render_seconds + 1)
    except TimeoutError:
        raise Unprocessable(
            "template_sandbox_violation",
            f"the template took longer than {limits.render_seconds:g} s to check",
        ) from None
