"""The CSV import's fast path: the header compiled once into a plan that turns
a row's cells straight into its staging record.

The general path builds a dict per row, validates it (``validate_lead``) and
makes the record from it (``staged_record``): three passes and two dicts per
row, more than reading the file costs. A plan knows from the header which cell
fills which field and checks each cell with the rules of the validation fast
path (``service.leads.validation``), so a row of common shape becomes its record
in one pass. A cell those rules are not certain of makes the plan give the row
up (``None``), and the caller takes the general path, which gives the same
record or words the rejection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from service.leads.repository import FIELD_BITS, STAGED_FIELDS
from service.leads.validation import (
    INTENT_LEVELS,
    MAX_ATTRIBUTES,
    MAX_TAG,
    MAX_TAGS,
    TEXT_LIMITS,
    fast_email,
    fast_score,
    json_fits,
    plain_key,
)

TAG_SPLIT = re.compile(r"[;|]")
ATTRIBUTE_PREFIX = "attributes."
# Text fields and their limits: the validation fast path's, and follow_up_status.
_TEXTS = {**TEXT_LIMITS, "follow_up_status": 40}
_SLOTS = {name: i for i, name in enumerate(STAGED_FIELDS)}
_TAGS_AT = 3 + _SLOTS["tags"]  # in the record, after line, email and present


class RowPlan:
    """Which cell fills which field of the staging record, for one header."""

    def __init__(self, columns: Sequence[str], lead_columns: frozenset[str]) -> None:
        self.email_at = list(columns).index("email")
        self.texts: list[tuple[int, int, int, int]] = []  # (cell, slot, bit, limit)
        # (cell, slot, bit, check): the value the check returns, None when not certain.
        self.checked: list[tuple[int, int, int, Callable[[str], Any]]] = []
        self.attributes: list[tuple[int, str]] = []  # (cell, key)
        # A column the fast path has no rule for sends every row the general way.
        self.usable = True
        for at, name in enumerate(columns):
            if name == "email":
                continue
            where = (at, _SLOTS.get(name, -1), FIELD_BITS.get(name, 0))
            if name in _TEXTS:
                self.texts.append((*where, _TEXTS[name]))
            elif name in _CHECKS:
                self.checked.append((*where, _CHECKS[name]))
            elif name in lead_columns:
                self.usable = False
            else:
                key = name.removeprefix(ATTRIBUTE_PREFIX)
                self.usable = self.usable and plain_key(key)
                self.attributes.append((at, key))

    def record(self, line: int, cells: list[str]) -> tuple[Any, ...] | None:
        """The row's staging record, or None when the general path must take the row."""
        email = fast_email(cells[self.email_at].strip())
        if email is None:
            return None
        fields: list[Any] = [None] * len(STAGED_FIELDS)
        present = 0
        for at, slot, bit, limit in self.texts:
            if value := cells[at].strip():
                if len(value) > limit or "\x00" in value:
                    return None
                fields[slot] = value
                present |= bit
        for at, slot, bit, check in self.checked:
            if value := cells[at].strip():
                if (checked := check(value)) is None:
                    return None
                fields[slot] = checked
                present |= bit
        if self.attributes:
            if (attributes := self._attributes(cells)) is None:
                return None
            if attributes:
                fields[-1] = orjson.dumps(attributes).decode()
                present |= FIELD_BITS["attributes"]
        return (line, email, present, *fields)

    def _attributes(self, cells: list[str]) -> dict[str, str] | None:
        attributes: dict[str, str] = {}
        for at, key in self.attributes:
            if value := cells[at].strip():
                attributes[key] = value
        if len(attributes) > MAX_ATTRIBUTES:
            return None
        # The validation fast path's bound on the JSON size, and its NUL rule.
        size = 2 + len(attributes) * 22
        for key, value in attributes.items():
            size += len(key) + len(value)
            if "\x00" in value:
                return None
        return attributes if json_fits(size) else None


def split_tags(cell: str) -> list[str]:
    """A tags cell's tags: separated by ``;`` (or ``|``), blanks dropped."""
    return [tag.strip() for tag in TAG_SPLIT.split(cell) if tag.strip()]


def _level(value: str) -> str | None:
    return value if value in INTENT_LEVELS else None


def array_literal(tags: list[str]) -> str:
    """Tags as a PostgreSQL array literal, each element quoted."""
    quoted = (
        tag if '"' not in tag and "\\" not in tag else tag.replace("\\", "\\\\").replace('"', '\\"')
        for tag in tags
    )
    return '{"' + '","'.join(quoted) + '"}' if tags else "{}"


def copy_ready(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """A staging record (``staged_record``) as ``RowPlan.record`` gives it: tags as a literal."""
    tags = record[_TAGS_AT]
    if tags is None:
        return record
    return (*record[:_TAGS_AT], array_literal(tags), *record[_TAGS_AT + 1 :])


def _tags(value: str) -> str | None:
    """A stripped, non-empty cell's tags as an array literal, when the fast rules are
    certain of them."""
    if "\x00" in value:
        return None
    if ";" not in value and "|" not in value:
        return array_literal([value]) if len(value) <= MAX_TAG else None
    tags = split_tags(value)
    if len(tags) > MAX_TAGS or any(len(tag) > MAX_TAG for tag in tags):
        return None
    return array_literal(tags)


_CHECKS: dict[str, Callable[[str], Any]] = {
    "intent_level": _level,
    "intent_score": fast_score,
    "tags": _tags,
}
