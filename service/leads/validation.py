"""A fast path for the rows nearly every upload consists of.

``email-validator`` and a pydantic model per row cost far more than reading
the row: at a million rows they were most of an import's time. The checks here
accept only shapes whose outcome is certain — a plain ASCII address, text
within its limits, a score of digits — and give the same values the full
validation would. Anything else (an unusual address, a value too long, a type
that is not the usual one) returns ``None``, and the caller runs the full
validation, which also words the rejection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES

from schemas.http import MAX_FREE_JSON_BYTES

# A dot-atom local part of the most common characters and a domain of
# letter-digit-hyphen labels ending in a letters-only TLD: email-validator
# accepts every such address unchanged, apart from the case of the domain.
_COMMON_ADDRESS = re.compile(
    r"[a-z0-9_+'=-]+(?:\.[a-z0-9_+'=-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}",
    re.ASCII,
)
# Well under the address length limits (254 in all, 253 for the domain), so
# that no length rule can apply to an address taken here.
_FAST_MAX_LENGTH = 200
_SPECIAL_TLDS = frozenset(SPECIAL_USE_DOMAIN_NAMES)

TEXT_LIMITS = {
    "name": 200,
    "first_name": 100,
    "last_name": 100,
    "company": 200,
    "title": 200,
    "event_id": 64,
}
INTENT_LEVELS = frozenset({"hot", "warm", "cold"})
MAX_TAGS, MAX_TAG, MAX_ATTRIBUTES, _MAX_KEY = 50, 100, 100, 100
# Safe JSON integers; bigger ones go the full way.
_MAX_PLAIN_INT = 2**53


def fast_email(address: str) -> str | None:
    """The normalized address when it has a common shape, else None (not: invalid)."""
    if len(address) > _FAST_MAX_LENGTH or not address.isascii():
        return None
    lowered = address.lower()
    if _COMMON_ADDRESS.fullmatch(lowered) is None or "--" in lowered:
        return None  # "--" after the @: Punycode and its look-alikes, checked by idna
    if lowered.rsplit(".", 1)[1] in _SPECIAL_TLDS:
        return None
    return lowered


def _plain_text(value: Any, limit: int) -> bool:
    return (
        type(value) is str
        and 0 < len(value) <= limit
        and "\x00" not in value
        and not value[0].isspace()
        and not value[-1].isspace()
    )


def fast_score(value: Any) -> int | None:
    """An intent score of the usual shape (0 to 100, as a number or digits), else None."""
    if type(value) is int and 0 <= value <= 100:
        return value
    if type(value) is str and 0 < len(value) <= 3 and value.isascii() and value.isdigit():
        score = int(value)
        return score if score <= 100 else None
    return None


def _tags(value: Any) -> list[str] | None:
    if type(value) is not list or len(value) > MAX_TAGS:
        return None
    if all(_plain_text(tag, MAX_TAG) for tag in value):
        return list(value)
    return None


def _plain_int(value: Any) -> bool:
    return type(value) is int and abs(value) < _MAX_PLAIN_INT


def plain_key(key: Any) -> bool:
    """An attribute key the fast path takes as it is."""
    return type(key) is str and len(key) <= _MAX_KEY and "\x00" not in key and key.strip() == key


def json_fits(size: int) -> bool:
    """Whether attributes of ``size`` (see ``_attributes``) are surely within the JSON limit."""
    return size * 12 <= MAX_FREE_JSON_BYTES


def _attributes(value: Any) -> dict[str, Any] | None:
    if type(value) is not dict or len(value) > MAX_ATTRIBUTES:
        return None
    size = 2
    for key, item in value.items():
        if not plain_key(key):
            return None
        if type(item) is str:
            if "\x00" in item:
                return None
            size += len(item)
        elif not (item is None or type(item) is bool or _plain_int(item)):
            return None
        # Each character escapes to at most 12 bytes of JSON; keys and
        # punctuation are counted the same way, so the bound is never low.
        size += len(key) + 22
    return dict(value) if json_fits(size) else None


def fast_lead(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The values ``validate_lead`` would give for a row of common shape, else None."""
    email = raw.get("email")
    if type(email) is not str or (normalized := fast_email(email)) is None:
        return None
    values: dict[str, Any] = {"email": normalized}
    for key, value in raw.items():
        if key in TEXT_LIMITS:
            if value is not None and not _plain_text(value, TEXT_LIMITS[key]):
                return None
            values[key] = value
        elif key == "email":
            continue
        elif key == "intent_level":
            if value is not None and value not in INTENT_LEVELS:
                return None
            values[key] = value
        elif key == "intent_score":
            if value is not None and (value := fast_score(value)) is None:
                return None
            values[key] = value
        elif key == "tags":
            if (tags := _tags(value)) is None:
                return None
            values[key] = tags
        elif key == "follow_up_status":
            if not _plain_text(value, 40):
                return None
            values[key] = value
        elif key == "attributes":
            if (attributes := _attributes(value)) is None:
                return None
            values[key] = attributes
        else:
            return None
    return values
