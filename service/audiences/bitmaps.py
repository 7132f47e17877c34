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
attribute with a number no float holds exactly (compared as ``numeric``).
An ``ilike`` reads all of a column's distinct values in one regex search
(``columns.Joined``); past ``DISTINCT_CAP`` values a column of texts is kept
as that joined text alone, and any other steps aside for equality and ``ilike``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from pyroaring import BitMap

from service.audiences.columns import (
    Attribute,
    FrozenAttribute,
    Sorted,
    Values,
    listed,
    ordered,
    union,
)
from service.audiences.filter_language import Node

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CATEGORICAL = ("intent_level", "follow_up_status", "company", "title", "event_id")


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
            return union(self.matching(child) for child in node["any"])
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
            return ordered(self.created, op, bounds)
        column = self.columns["score" if node["field"] == "intent_score" else node["field"]]
        return self._column_leaf(column, op, value)

    def _column_leaf(self, column: Values, op: str, value: Any) -> BitMap:
        if op == "exists":
            return column.present if value else self.universe - column.present
        if op in ("eq", "in"):
            return column.equal(listed(value))
        if op in ("ne", "not_in"):
            return column.present - column.equal(listed(value))
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
