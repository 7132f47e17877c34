"""What one render of a sponsor's template may cost: output size, time and call depth.

The limits are process-wide, set once at startup from the settings
(``configure``). A render's deadline and call depth live in a ``Budget`` held
in a context variable, so every template rendered for one message (subject,
HTML, text) shares one deadline (``bounded``). The sandbox (``sandbox.py``)
checks against these while a template runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from jinja2.exceptions import SecurityError

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class Limits:
    """What one render may cost (``TEMPLATE_MAX_OUTPUT_CHARS``, ``TEMPLATE_RENDER_SECONDS``)."""

    max_output_chars: int = 1_000_000
    render_seconds: float = 2.0


# Process-wide: set once at startup from the settings (``configure``).
limits = Limits()


def configure(max_output_chars: int, render_seconds: float) -> None:
    """Apply the deployment's limits to every later render in this process."""
    limits.max_output_chars = max_output_chars
    limits.render_seconds = render_seconds


class TemplateLimitError(SecurityError):
    """A template went past what one render may cost (size, time or depth)."""


class Budget:
    """One render's deadline and call depth."""

    __slots__ = ("deadline", "depth")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.depth = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"the template took longer than {limits.render_seconds:g} s to render"
            )


render_budget: ContextVar[Budget | None] = ContextVar("templaterender_budget", default=None)


def budget() -> Budget:
    """The budget of the render under way (a fresh one outside any)."""
    return render_budget.get() or Budget(limits.render_seconds)


def bounded(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args)`` as one render: one deadline for every template it renders."""
    token = render_budget.set(Budget(limits.render_seconds))
    try:
        return function(*args, **kwargs)
    finally:
        render_budget.reset(token)


def check_size(size: int, what: str) -> None:
    if size > limits.max_output_chars:
        raise TemplateLimitError(
            f"{what} would be {size:,} characters (at most {limits.max_output_chars:,})"
        )
