"""U+0000 in JSON: PostgreSQL text and jsonb cannot store it, so it must be refused early."""

from __future__ import annotations

from typing import Any


def nul_character(value: Any) -> str | None:
    """The dotted path of the first string (value or key) holding U+0000, or None.

    PostgreSQL text cannot store it; rejecting it here keeps it a 422, not a 500.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path or "body"
        elif isinstance(node, dict | list):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return child_path
                stack.append((child, child_path))
    return None
