"""An in-memory index of one sponsor's leads that counts an audience exactly: roaring bitmaps.

PostgreSQL counts a broad audience by reading every page of the sponsor's
leads. Here each filterable value has the set of lead ids that have it (a
compressed bitmap, intersected and united in C), and each ordered column the
ids sorted by value, with a bitmap per ``BUCKET`` of them. A filter becomes
set algebra: ``all`` intersects, ``any`` unites, ``not`` takes the complement
within the sponsor's leads with an email (exact: every leaf is two-valued, see
``service.audiences.filter_language``); a range unites the buckets inside it
and the two partial ones.

A leaf the index cannot decide exactly as PostgreSQL does raises
``Unsupported`` and SQL counts instead: ``ilike`` beyond ASCII (case folding
is the database's locale), equality on an attribute key with arrays or objects
among its values (containment has its own rules there), ranges on an
attribute with a number no float holds exactly (compared as ``numeric``),
equality or ``ilike`` on a column of more than ``DISTINCT_CAP`` values.
"""

from __future__ import annotations

import json
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from pyroaring import BitMap

from service.audiences.filter_language import Node

BUCKET = 4096
DISTINCT_CAP = 20_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CATEGORICAL = ("intent_level", "follow_up_status", "company", "title", "event_id")


class Unsupported(Exception):
    """The index cannot evaluate this filter exactly as PostgreSQL would."""


class LeadRow(NamedTuple):
    """What the index keeps of a lead (``created_us``: microseconds since the epoch)."""

    id: int
    has_email: bool
    intent_level: str | None
    intent_score: int | None
    follow_up_status: str | None
    company: str | None
    title: str | None
    event_id: str | None
    tags: list[str]
    attributes: str
    created_us: int
    suppressed: bool


def _union(maps: Iterable[BitMap]) -> BitMap:
    maps = list(maps)
    return BitMap.union(*maps) if maps else BitMap()


class Values:
    """Ids per distinct value of a column; ``None`` values are absent."""

    def __init__(self, groups: dict[Any, list[int]]) -> None:
        self.present = BitMap()
        self.by_value: dict[Any, BitMap] | None = {}
        self.ascii = True
        for value, ids in groups.items():
            bitmap = BitMap(ids)
            self.present |= bitmap
            self.by_value[value] = bitmap
            text = value[1] if isinstance(value, tuple) else value
            if isinstance(text, str) and not text.isascii():
                self.ascii = False
        if len(groups) > DISTINCT_CAP:
            self.by_value = None

    def _values(self) -> dict[Any, BitMap]:
        if self.by_value is None:
            raise Unsupported("too many distinct values")
        return self.by_value

    def equal(self, values: list[Any]) -> BitMap:
        by_value = self._values()
        return _union(by_value[v] for v in values if v in by_value)

    def where(self, test: Any) -> BitMap:
        return _union(ids for value, ids in self._values().items() if test(value))

    def like(self, pattern: str) -> BitMap:
        regex = like_regex(pattern)
        if regex is None or not self.ascii:
            raise Unsupported("ilike beyond ASCII")
        return self.where(lambda value: isinstance(value, str) and regex.fullmatch(value))


class Sorted:
    """Ids sorted by a numeric value, and bitmaps of every ``BUCKET`` of them."""

    def __init__(self, values: Iterable[float], ids: Iterable[int]) -> None:
        self.values = array("d", values)
        self.ids = array("I", ids)
        self.buckets = [
            BitMap(self.ids[start : start + BUCKET]) for start in range(0, len(self.ids), BUCKET)
        ]
        self.present = _union(self.buckets)

    @classmethod
    def of_pairs(cls, pairs: list[tuple[float, int]]) -> Sorted:
        pairs.sort()
        return cls((value for value, _ in pairs), (lead for _, lead in pairs))

    def between(
        self, low: float | None, low_open: bool, high: float | None, high_open: bool
    ) -> BitMap:
        """Ids whose value lies between the bounds (``None``: unbounded)."""
        start = 0 if low is None else (bisect_right if low_open else bisect_left)(self.values, low)
        end = (
            len(self.values)
            if high is None
            else (bisect_left if high_open else bisect_right)(self.values, high)
        )
        if start >= end:
            return BitMap()
        first, last = -(-start // BUCKET), end // BUCKET
        if first > last:
            return BitMap(self.ids[start:end])
        return _union(
            [
                BitMap(self.ids[start : first * BUCKET]),
                *self.buckets[first:last],
                BitMap(self.ids[last * BUCKET : end]),
            ]
        )


def like_regex(pattern: str) -> re.Pattern[str] | None:
    """SQL ``ILIKE`` (backslash escapes) as a regex, for ASCII patterns; None otherwise."""
    if not pattern.isascii():
        return None
    parts: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    if escaped:  # PostgreSQL refuses a pattern that ends with the escape character
        return None
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL | re.ASCII)


def json_key(value: Any) -> tuple[str, Any]:
    """A JSON scalar as jsonb compares it: numbers by value, booleans apart from numbers."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int):
        return ("n", Decimal(value))
    if isinstance(value, float | Decimal):
        return ("n", Decimal(repr(value)) if isinstance(value, float) else value)
    return ("s", value)


class Attribute:
    """One attribute key while the index is built: who has it, ids per scalar value,
    numbers in order (given sorted by the database, or sorted here)."""

    def __init__(self) -> None:
        self.present: list[int] = []
        self.scalars: dict[tuple[str, Any], list[int]] = {}
        self.pairs: list[tuple[float, int]] = []
        self.numbers: Sorted | None = None
        self.containers = False  # arrays or objects among the values

    def add(self, value: Any, leads: list[int]) -> None:
        """Leads whose attribute has this (parsed) JSON value."""
        self.present.extend(leads)
        if isinstance(value, list | dict):
            self.containers = True
        elif value is not None:
            key = json_key(value)
            self.scalars.setdefault(key, []).extend(leads)
            if key[0] == "n" and self.numbers is None:
                self.pairs.extend((float(key[1]), lead) for lead in leads)


class FrozenAttribute:
    def __init__(self, source: Attribute) -> None:
        self.present = BitMap(source.present)
        self.values = Values(source.scalars)
        self.containers = source.containers
        exact = all(
            Decimal(float(number)) == number for kind, number in source.scalars if kind == "n"
        )
        numbers = source.numbers or Sorted.of_pairs(source.pairs)
        self.numbers = numbers if exact else None

    def leaf(self, op: str, value: Any) -> BitMap:
        if op == "exists":
            return self.present
        if op == "ilike":
            regex = like_regex(value)
            if regex is None or not self.values.ascii:
                raise Unsupported("ilike beyond ASCII")
            return self.values.where(lambda v: v[0] == "s" and regex.fullmatch(v[1]))
        if op in ("eq", "ne", "in", "not_in"):
            if self.containers:
                raise Unsupported("containment over arrays or objects")
            matched = self.values.equal([json_key(v) for v in _listed(value)])
            return self.present - matched if op in ("ne", "not_in") else matched
        if self.numbers is None:
            raise Unsupported("numbers no float holds exactly")
        return _ordered(self.numbers, op, value)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _ordered(column: Sorted, op: str, value: Any) -> BitMap:
    if op == "between":
        return column.between(value[0], False, value[1], False)
    if op in ("gt", "gte"):
        return column.between(value, op == "gt", None, False)
    return column.between(None, False, value, op == "lt")


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_MICROSECOND


_ONE_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


@dataclass
class Parts:
    """What an index is made of: lead ids per value, before they become bitmaps."""

    universe: list[int] = field(default_factory=list)
    suppressed: list[int] = field(default_factory=list)
    columns: dict[str, dict[Any, list[int]]] = field(
        default_factory=lambda: {name: {} for name in (*_CATEGORICAL, "score")}
    )
    tags: dict[str, list[int]] = field(default_factory=dict)
    tagged: list[int] = field(default_factory=list)
    created: Sorted | None = None
    attributes: dict[str, Attribute] = field(default_factory=dict)

    @classmethod
    def of_rows(cls, rows: Iterable[LeadRow]) -> Parts:
        """Grouped here, as the database groups them for a whole sponsor."""
        parts = cls()
        created: list[tuple[float, int]] = []
        for row in rows:
            lead = row.id
            if row.has_email:
                parts.universe.append(lead)
            if row.suppressed:
                parts.suppressed.append(lead)
            for name in _CATEGORICAL:
                value = getattr(row, name)
                if value is not None:
                    parts.columns[name].setdefault(value, []).append(lead)
            if row.intent_score is not None:
                parts.columns["score"].setdefault(row.intent_score, []).append(lead)
            if row.tags:
                parts.tagged.append(lead)
            for tag in row.tags:
                if tag is not None:
                    parts.tags.setdefault(tag, []).append(lead)
            created.append((row.created_us, lead))
            for key, value in json.loads(row.attributes, parse_float=Decimal).items():
                parts.attributes.setdefault(key, Attribute()).add(value, [lead])
        parts.created = Sorted.of_pairs(created)
        return parts


class Index:
    """One sponsor's leads as bitmaps: count any supported filter exactly."""

    def __init__(self, parts: Parts) -> None:
        self.universe = BitMap(parts.universe)
        self.suppressed = BitMap(parts.suppressed)
        self.columns = {name: Values(group) for name, group in parts.columns.items()}
        self.tags = Values(parts.tags)
        self.tagged = BitMap(parts.tagged)
        self.created = parts.created or Sorted([], [])
        self.attributes = {key: FrozenAttribute(a) for key, a in parts.attributes.items()}

    @classmethod
    def of_rows(cls, rows: Iterable[LeadRow]) -> Index:
        return cls(Parts.of_rows(rows))

    def reached(self, node: Node, without: BitMap | None = None) -> BitMap:
        """Leads with an email matching ``node``, suppressed ones and ``without`` left out."""
        reached = self.universe - self.suppressed
        if without is not None:
            reached -= without
        return self.matching(node) & reached

    def matching(self, node: Node) -> BitMap:
        """Ids matching the filter (may hold leads without an email: ``count`` drops them)."""
        if "all" in node:
            return BitMap.intersection(*(self.matching(child) for child in node["all"]))
        if "any" in node:
            return _union(self.matching(child) for child in node["any"])
        if "not" in node:
            return self.universe - self.matching(node["not"])
        op, value = node["op"], node["value"]
        if node["kind"] == "attribute":
            attribute = self.attributes.get(node["key"])
            if attribute is None:
                return self.universe if op == "exists" and not value else BitMap()
            found = attribute.leaf(op, value)
            return self.universe - found if op == "exists" and not value else found
        if node["kind"] == "tags":
            if op == "exists":
                return self.tagged if value else self.universe - self.tagged
            if op == "contains_any":
                return self.tags.equal(value)
            return BitMap.intersection(*(self.tags.equal([tag]) for tag in value))
        if node["field"] == "created_at":
            bounds = [_micros(v) for v in value] if op == "between" else _micros(value)
            return _ordered(self.created, op, bounds)
        column = self.columns["score" if node["field"] == "intent_score" else node["field"]]
        return self._column_leaf(column, op, value)

    def _column_leaf(self, column: Values, op: str, value: Any) -> BitMap:
        if op == "exists":
            return column.present if value else self.universe - column.present
        if op in ("eq", "in"):
            return column.equal(_listed(value))
        if op in ("ne", "not_in"):
            return column.present - column.equal(_listed(value))
        if op == "ilike":
            return column.like(value)
        if op == "between":
            return column.where(lambda v: value[0] <= v <= value[1])
        compare = {
            "gt": lambda v: v > value,
            "gte": lambda v: v >= value,
            "lt": lambda v: v < value,
            "lte": lambda v: v <= value,
        }[op]
        return column.where(compare)
