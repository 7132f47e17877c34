"""The columns of the audience index (``service.audiences.bitmaps``): lead ids per value
as roaring bitmaps, ordered columns in buckets, attribute keys with typed values.

Each column answers one leaf of the filter language exactly as PostgreSQL would,
or raises ``Unsupported`` so SQL counts instead.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from itertools import accumulate, chain
from typing import Any

from pyroaring import BitMap

BUCKET = 4096
DISTINCT_CAP = 20_000


class Unsupported(Exception):
    """The index cannot evaluate this filter exactly as PostgreSQL would."""


def union(maps: Iterable[BitMap]) -> BitMap:
    maps = list(maps)
    return BitMap.union(*maps) if maps else BitMap()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class Values:
    """Ids per distinct value of a column; ``None`` values are absent.

    ``text_of`` gives the text an ``ilike`` reads of a value (None: not text).
    Up to ``DISTINCT_CAP`` values, a bitmap per value. Past it, a bitmap per value
    would cost a few hundred bytes each, for ever: a column of texts only is then
    kept as ``Joined`` text alone (equality a search, ``ilike`` a regex over it),
    any other steps aside.
    """

    def __init__(
        self, groups: Mapping[Any, list[int]], text_of: Callable[[Any], str | None] = _text
    ) -> None:
        self.ascii = True
        self._text_of = text_of
        texts_only = True
        for value in groups:
            text = text_of(value)
            if text is None:
                texts_only = False
            elif not text.isascii():
                self.ascii = False
        self.by_value: dict[Any, BitMap] | None = None
        self._joined: Joined | None = None
        if len(groups) <= DISTINCT_CAP:
            self.by_value = {value: BitMap(ids) for value, ids in groups.items()}
            self.present = union(self.by_value.values())
        elif texts_only:
            self._joined = Joined(groups, text_of)
            self.present = BitMap(self._joined.order)
        else:
            self.present = BitMap(chain.from_iterable(groups.values()))

    def equal(self, values: list[Any]) -> BitMap:
        if self.by_value is not None:
            return union(self.by_value[v] for v in values if v in self.by_value)
        if self._joined is None:
            raise Unsupported("too many distinct values")
        return self._joined.equal(t for v in values if (t := self._text_of(v)) is not None)

    def where(self, test: Any) -> BitMap:
        """The values ``test`` accepts (the score's ranges: a hundred values at most)."""
        if self.by_value is None:
            raise Unsupported("too many distinct values")
        return union(ids for value, ids in self.by_value.items() if test(value))

    def like(self, pattern: str) -> BitMap:
        regex = like_regex(pattern)
        if regex is None or not self.ascii:
            raise Unsupported("ilike beyond ASCII")
        if self._joined is None:
            if self.by_value is None:
                raise Unsupported("too many distinct values")
            self._joined = Joined(self.by_value, self._text_of)  # at the first ilike, kept
        return self._joined.like(regex)


class Joined:
    """A column's texts in one string, each after a NUL (which no PostgreSQL text
    holds), and the ids of each: one regex search finds every value an ``ilike``
    matches, in C, however many distinct values the column has."""

    def __init__(
        self, groups: Mapping[Any, Iterable[int]], text_of: Callable[[Any], str | None]
    ) -> None:
        texts: list[str] = []
        self.order = array("I")  # the ids of each text, one text after another
        self.offsets = array("Q", [0])  # where each text's ids start in ``order``
        for value, ids in groups.items():
            if (text := text_of(value)) is not None:
                texts.append(text)
                self.order.extend(ids)
                self.offsets.append(len(self.order))
        self.text = "".join(f"\0{text}" for text in texts) + "\0"
        self.starts = array("Q", accumulate((len(text) + 1 for text in texts), initial=0))

    def like(self, regex: re.Pattern[str]) -> BitMap:
        return self._ids(match.start() for match in regex.finditer(self.text))

    def equal(self, texts: Iterable[str]) -> BitMap:
        return self._ids(at for text in texts if (at := self.text.find(f"\0{text}\0")) >= 0)

    def _ids(self, starts: Iterable[int]) -> BitMap:
        """The ids of the texts that start (their NUL) at these positions; the last NUL
        starts none."""
        order, offsets, last = self.order, self.offsets, len(self.offsets) - 1
        found = (bisect_left(self.starts, at) for at in starts)
        return BitMap(
            chain.from_iterable(order[offsets[i] : offsets[i + 1]] for i in found if i < last)
        )


class Sorted:
    """Ids sorted by a numeric value, and bitmaps of every ``BUCKET`` of them."""

    def __init__(self, values: Iterable[float], ids: Iterable[int]) -> None:
        self.values = array("d", values)
        self.ids = array("I", ids)
        self.buckets = [
            BitMap(self.ids[start : start + BUCKET]) for start in range(0, len(self.ids), BUCKET)
        ]
        self.present = union(self.buckets)

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
        return union(
            [
                BitMap(self.ids[start : first * BUCKET]),
                *self.buckets[first:last],
                BitMap(self.ids[last * BUCKET : end]),
            ]
        )


def like_regex(pattern: str) -> re.Pattern[str] | None:
    """SQL ``ILIKE`` (backslash escapes) as a regex over ``Joined`` text: it matches a
    NUL and the whole text after it; None for a pattern beyond ASCII."""
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
            parts.append(_WILDCARDS.get(char) or re.escape(char))
    if escaped:  # PostgreSQL refuses a pattern that ends with the escape character
        return None
    return re.compile(f"\\x00(?:{''.join(parts)})(?=\\x00|\\Z)", re.IGNORECASE | re.ASCII)


# Wildcards stay within one text of the joined string.
_WILDCARDS = {"%": "[^\\x00]*", "_": "[^\\x00]"}


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
        self.values = Values(source.scalars, _string_scalar)
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
            return self.values.like(value)
        if op in ("eq", "ne", "in", "not_in"):
            if self.containers:
                raise Unsupported("containment over arrays or objects")
            matched = self.values.equal([json_key(v) for v in listed(value)])
            return self.present - matched if op in ("ne", "not_in") else matched
        if self.numbers is None:
            raise Unsupported("numbers no float holds exactly")
        return ordered(self.numbers, op, value)


def _string_scalar(key: tuple[str, Any]) -> str | None:
    return key[1] if key[0] == "s" else None


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def ordered(column: Sorted, op: str, value: Any) -> BitMap:
    if op == "between":
        return column.between(value[0], False, value[1], False)
    if op in ("gt", "gte"):
        return column.between(value, op == "gt", None, False)
    return column.between(None, False, value, op == "lt")
