"""The condition language of trigger rules: a small JSON tree evaluated in Python.

A condition is ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}`` or a
leaf ``{"field": "a.b", "op": "eq", "value": ...}`` over dotted paths into the
event. It is checked whole at save (``check``, a 422 naming the path of the
first problem), so evaluation (``matches``) never meets a shape it does not
know. Depth and size are bounded: a rule runs for every event of its topic.
An empty ``all`` is true (the rule fires on every event), an empty ``any`` false.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from service.errors import Unprocessable

MAX_DEPTH = 6
MAX_NODES = 50
MAX_LIST = 100
_PATH = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$")
_SCALAR_OPS = frozenset(("eq", "ne", "changed_to"))
_ORDER_OPS = frozenset(("gt", "gte", "lt", "lte"))
OPS = _SCALAR_OPS | _ORDER_OPS | {"in", "exists"}
_MISSING = object()


def _refuse(message: str, where: str) -> Unprocessable:
    return Unprocessable("invalid_condition", message, where)


def check_path(path: object, where: str) -> str:
    """A dotted path into an event: up to 8 segments of letters, digits, ``_``, ``-``."""
    if not isinstance(path, str) or not _PATH.match(path):
        raise _refuse("a path is dotted names, e.g. 'data.status'", where)
    return path


def check(tree: object, where: str = "condition") -> None:
    """Raise ``invalid_condition`` (422) naming the first part that is not a condition."""
    count = [0]
    _check(tree, where, 1, count)


def _check(node: object, where: str, depth: int, count: list[int]) -> None:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise _refuse(f"a condition has at most {MAX_NODES} parts", where)
    if depth > MAX_DEPTH:
        raise _refuse(f"a condition nests at most {MAX_DEPTH} deep", where)
    if not isinstance(node, dict):
        raise _refuse("a condition is an object", where)
    if set(node) in ({"all"}, {"any"}):
        (key,) = node
        children = node[key]
        if not isinstance(children, list):
            raise _refuse(f"'{key}' takes a list of conditions", f"{where}.{key}")
        for i, child in enumerate(children):
            _check(child, f"{where}.{key}.{i}", depth + 1, count)
        return
    if set(node) == {"not"}:
        _check(node["not"], f"{where}.not", depth + 1, count)
        return
    _check_leaf(node, where)


def _check_leaf(node: dict[str, Any], where: str) -> None:
    if not {"field", "op"} <= set(node) <= {"field", "op", "value"}:
        raise _refuse("a condition is all, any, not or {field, op, value}", where)
    check_path(node["field"], f"{where}.field")
    op, value = node["op"], node.get("value")
    if op not in OPS:
        raise _refuse(f"op is one of {', '.join(sorted(OPS))}", f"{where}.op")
    if op in _SCALAR_OPS and not _is_scalar(value):
        raise _refuse(f"'{op}' compares with a string, number, boolean or null", f"{where}.value")
    if op in _ORDER_OPS and not _is_number(value):
        raise _refuse(f"'{op}' compares with a number", f"{where}.value")
    if op == "in" and not (
        isinstance(value, list) and len(value) <= MAX_LIST and all(map(_is_scalar, value))
    ):
        raise _refuse(f"'in' takes a list of up to {MAX_LIST} scalars", f"{where}.value")
    if op == "exists" and "value" in node and not isinstance(value, bool):
        raise _refuse("'exists' takes true or false", f"{where}.value")


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def lookup(event: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or ``None`` when any step is missing."""
    value = _get(event, path)
    return None if value is _MISSING else value


def _get(event: Mapping[str, Any], path: str) -> Any:
    value: Any = event
    for name in path.split("."):
        if not isinstance(value, Mapping) or name not in value:
            return _MISSING
        value = value[name]
    return value


def matches(tree: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether a checked condition holds for the event.

    ``changed_to`` compares with the event's ``previous`` (the same path under it);
    an event without ``previous`` counts as a change.
    """
    if "all" in tree:
        return all(matches(child, event) for child in tree["all"])
    if "any" in tree:
        return any(matches(child, event) for child in tree["any"])
    if "not" in tree:
        return not matches(tree["not"], event)
    op, wanted = tree["op"], tree.get("value")
    actual = _get(event, tree["field"])
    if op == "exists":
        return (actual is not _MISSING and actual is not None) == (wanted is not False)
    if actual is _MISSING:
        return bool(op == "ne")
    if op == "eq":
        return bool(actual == wanted)
    if op == "ne":
        return bool(actual != wanted)
    if op == "in":
        return any(actual == item for item in wanted or ())
    if op == "changed_to":
        previous = event.get("previous")
        before = _get(previous, tree["field"]) if isinstance(previous, Mapping) else _MISSING
        return bool(actual == wanted) and (previous is None or before != wanted)
    if not _is_number(actual):
        return False
    return bool(
        {"gt": actual > wanted, "gte": actual >= wanted, "lt": actual < wanted}.get(
            op, actual <= wanted
        )
    )
