"""Field types the HTTP contracts share: what PostgreSQL can store, stored JSON, addresses.

A field or parameter typed with one of these is refused as the caller's
mistake (422) where it would otherwise fail in the driver (a 500), and a
stored value is shown even when it was written before today's checks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field

# Numbers and times as PostgreSQL stores them: past these a query fails in the driver,
# so they are refused as the caller's mistake (422) before any query is built.
BIGINT_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
BigIntId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
IntVersion = Annotated[int, Field(ge=1, le=INT_MAX)]


def _storable_time(value: datetime) -> datetime:
    # PostgreSQL keeps UTC; Python cannot move 0001-01-01+14:00 or 9999-12-31-14:00 there.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be between the years 1 and 9999 in UTC") from None


PgDatetime = Annotated[datetime, AfterValidator(_storable_time)]


# Stored JSON read back: anything nested deeper than this (written before the write
# checks, or straight into the database) is cut there rather than failing the read.
STORED_MAX_DEPTH = 64
CUT = "[nested too deep]"


def _cut_deep(value: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    stack: list[tuple[Any, Any, int]] = [(value, root, 1)]
    while stack:
        source, target, depth = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, child in items:
            if not isinstance(child, dict | list):
                copy: Any = child
            elif depth >= STORED_MAX_DEPTH:
                copy = CUT
            else:
                copy = {} if isinstance(child, dict) else [None] * len(child)
                stack.append((child, copy, depth + 1))
            target[key] = copy
    return root


def _tolerate_depth(value: dict[str, Any]) -> dict[str, Any]:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > STORED_MAX_DEPTH:
            return _cut_deep(value)
        if isinstance(node, dict | list):
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return value


StoredJson = Annotated[dict[str, Any], AfterValidator(_tolerate_depth)]


def one_address(value: str | None) -> str | None:
    """Exactly one bare address: a list or a display name would be pasted into a header."""
    if value is None:
        return None
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"must be one email address: {exc}") from None
    return value
