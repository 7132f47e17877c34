"""The audience filter language: a JSON tree validated into a normal form.

A ``custom`` audience carries a filter tree::

    {"all": [node, …]}   {"any": [node, …]}   {"not": node}
    {"field": F, "op": OP, "value": V}                       (a leaf)

over a whitelist of fields, each with the operators that fit its type. The
seed shorthand ``{"intent_score_min": 50, "intent_score_max": 100, "tags": [...]}``
is accepted as well. ``parse_filter`` validates a raw tree into a normal form
(every mistake is a 422 naming its path, e.g. ``audience_filter.all[2].op``);
``service.audiences.filters`` compiles that form to SQL.

Semantics are two-valued: a leaf over a missing value (NULL column, absent
attribute) is false, except ``exists`` which tests exactly that, so ``not``
is a true complement.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any

from service.errors import InvalidAudience

# Caps: a filter is typed by a person in a dashboard, never generated without bound.
MAX_DEPTH = 8
MAX_NODES = 200
MAX_WIDTH = 50
MAX_LIST = 500
MAX_STRING = 200
MAX_NUMBER = 1e15

INTENT_LEVELS = ("hot", "warm", "cold")
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

# Field → kind; the kind decides the ops and the value types.
FIELDS: dict[str, str] = {
    "intent_level": "level",
    "intent_score": "int",
    "tags": "tags",
    "follow_up_status": "str",
    "company": "str",
    "title": "str",
    "event_id": "str",
    "created_at": "datetime",
}
_EQUALITY = ("eq", "ne", "in", "not_in")
_ORDER = ("gt", "gte", "lt", "lte", "between")
OPS: dict[str, tuple[str, ...]] = {
    "level": (*_EQUALITY, "exists"),
    "str": (*_EQUALITY, "ilike", "exists"),
    "int": (*_EQUALITY, *_ORDER, "exists"),
    "tags": ("contains_any", "contains_all", "exists"),
    "datetime": _ORDER,
    "attribute": (*_EQUALITY, *_ORDER, "ilike", "exists"),
}
SHORTHAND = ("intent_score_min", "intent_score_max", "tags", "intent_level", "follow_up_status")

Node = dict[str, Any]


def _fail(path: str, message: str, code: str = "invalid_filter") -> InvalidAudience:
    return InvalidAudience(code, message, path)


def parse_filter(raw: Any, path: str = "audience_filter") -> Node:
    """Validate a raw filter (tree or shorthand) into the normal form, or raise a 422."""
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "a filter is a non-empty JSON object")
    shorthand = not raw.keys() & {"all", "any", "not", "field"}
    if shorthand:
        raw = _expand_shorthand(raw, path)
    return _parse_node(raw, path, 1, [0], trusted=shorthand)


def _expand_shorthand(raw: dict[str, Any], path: str) -> Node:
    leaves: list[Node] = []
    for key, value in raw.items():
        where = f"{path}.{key}"
        if key == "intent_score_min":
            leaves.append({"field": "intent_score", "op": "gte", "value": value})
        elif key == "intent_score_max":
            leaves.append({"field": "intent_score", "op": "lte", "value": value})
        elif key == "tags":
            leaves.append({"field": "tags", "op": "contains_any", "value": value})
        elif key in ("intent_level", "follow_up_status"):
            op = "in" if isinstance(value, list) else "eq"
            leaves.append({"field": key, "op": op, "value": value})
        else:
            raise _fail(
                where,
                f"unknown key '{_shown(key)}': use all/any/not/field or {', '.join(SHORTHAND)}",
                "unknown_field",
            )
        leaves[-1]["_path"] = where
    return {"all": leaves}


def _shown(text: str) -> str:
    """Echo caller text in messages, bounded."""
    return text[:64]


def _parse_node(
    raw: Any, path: str, depth: int, counter: list[int], *, trusted: bool = False
) -> Node:
    """``trusted``: the node came from the shorthand expansion, so its ``_path`` is ours."""
    if depth > MAX_DEPTH:
        raise _fail(path, f"the filter is nested deeper than {MAX_DEPTH} levels", "filter_too_deep")
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise _fail(path, f"the filter has more than {MAX_NODES} nodes", "filter_too_large")
    if not isinstance(raw, dict):
        raise _fail(path, "a filter node is a JSON object")
    if trusted:
        path = raw.get("_path", path)
    keys = set(raw) - {"_path"} if trusted else set(raw)
    for combinator in ("all", "any"):
        if combinator in keys:
            if keys != {combinator}:
                raise _fail(path, f"'{combinator}' stands alone in its object")
            children = raw[combinator]
            if not isinstance(children, list) or not children:
                raise _fail(f"{path}.{combinator}", "a non-empty list of filter nodes")
            if len(children) > MAX_WIDTH:
                raise _fail(
                    f"{path}.{combinator}",
                    f"at most {MAX_WIDTH} nodes in one list",
                    "filter_too_large",
                )
            return {
                combinator: [
                    _parse_node(
                        child, f"{path}.{combinator}[{i}]", depth + 1, counter, trusted=trusted
                    )
                    for i, child in enumerate(children)
                ]
            }
    if "not" in keys:
        if keys != {"not"}:
            raise _fail(path, "'not' stands alone in its object")
        return {"not": _parse_node(raw["not"], f"{path}.not", depth + 1, counter)}
    if "field" in keys:
        return _parse_leaf(raw, keys, path, trusted)
    raise _fail(path, "a filter node has 'all', 'any', 'not' or 'field'")


def _field_kind(field: Any, path: str) -> tuple[str, str | None]:
    if not isinstance(field, str):
        raise _fail(path, "the field is a string", "unknown_field")
    if field in FIELDS:
        return FIELDS[field], None
    if field.startswith("attributes."):
        key = field.removeprefix("attributes.")
        if _ATTRIBUTE_KEY.match(key):
            return "attribute", key
        raise _fail(
            path, "an attribute key is 1-64 letters, digits, '_', '-' or '.'", "unknown_field"
        )
    raise _fail(
        path,
        f"unknown field '{_shown(field)}': use {', '.join(FIELDS)} or attributes.<key>",
        "unknown_field",
    )


def _parse_leaf(raw: dict[str, Any], keys: set[str], path: str, trusted: bool) -> Node:
    extra = keys - {"field", "op", "value"}
    if extra:
        name = sorted(str(k) for k in extra)[0]
        raise _fail(f"{path}.{_shown(name)}", "a leaf has only field, op and value")
    kind, attribute = _field_kind(raw["field"], f"{path}.field")
    op = raw.get("op")
    if not isinstance(op, str) or op not in OPS[kind]:
        shown = _shown(op) if isinstance(op, str) else repr(op)[:64]
        raise _fail(
            f"{path}.op",
            f"op '{shown}' does not apply to {raw['field']}: use {', '.join(OPS[kind])}",
            "invalid_op",
        )
    # A shorthand key is its own value: errors name the key itself.
    where = path if trusted else f"{path}.value"
    if op == "exists":
        value = raw.get("value", True)
        if not isinstance(value, bool):
            raise _fail(where, "exists takes true or false", "invalid_value")
    elif "value" not in raw:
        raise _fail(where, f"op '{op}' needs a value", "invalid_value")
    else:
        value = _parse_value(kind, op, raw["value"], where)
    leaf: Node = {"field": raw["field"], "op": op, "value": value}
    if attribute is not None:
        leaf["key"] = attribute
    leaf["kind"] = kind
    return leaf


def _parse_value(kind: str, op: str, value: Any, path: str) -> Any:
    if op in ("in", "not_in", "contains_any", "contains_all"):
        if not isinstance(value, list) or not value:
            raise _fail(path, f"op '{op}' takes a non-empty list", "invalid_value")
        if len(value) > MAX_LIST:
            raise _fail(path, f"at most {MAX_LIST} values", "filter_too_large")
        scalar_kind = "str" if kind == "tags" else kind
        return [_scalar(scalar_kind, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise _fail(path, "between takes [low, high]", "invalid_value")
        low, high = (_ordered(kind, item, f"{path}[{i}]") for i, item in enumerate(value))
        if low > high:
            raise _fail(path, "between needs low <= high", "invalid_value")
        return [low, high]
    if op in ("gt", "gte", "lt", "lte"):
        return _ordered(kind, value, path)
    if op == "ilike":
        return _string(value, path)
    return _scalar(kind, value, path)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, "expected a string", "invalid_value")
    if len(value) > MAX_STRING:
        raise _fail(path, f"at most {MAX_STRING} characters", "filter_too_large")
    if "\x00" in value:
        raise _fail(path, "NUL characters are not allowed", "invalid_value")
    return value


def _number(value: Any, path: str, *, integer: bool) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, "expected a number", "invalid_value")
    if integer and not (isinstance(value, int) or value.is_integer()):
        raise _fail(path, "expected an integer", "invalid_value")
    if not math.isfinite(value) or abs(value) > (32767 if integer else MAX_NUMBER):
        raise _fail(path, "the number is out of range", "invalid_value")
    return int(value) if integer else value


def _datetime(value: Any, path: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise _fail(path, "expected an ISO 8601 date or date-time", "invalid_value")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise _fail(path, "expected an ISO 8601 date or date-time", "invalid_value") from None
        parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ordered(kind: str, value: Any, path: str) -> Any:
    if kind == "datetime":
        return _datetime(value, path)
    return _number(value, path, integer=kind == "int")


def _scalar(kind: str, value: Any, path: str) -> Any:
    if kind == "int":
        return _number(value, path, integer=True)
    if kind == "level":
        if value not in INTENT_LEVELS:
            raise _fail(path, f"use one of {', '.join(INTENT_LEVELS)}", "invalid_value")
        return value
    if kind == "attribute":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return _number(value, path, integer=False)
        return _string(value, path)
    return _string(value, path)
