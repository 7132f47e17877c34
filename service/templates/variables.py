"""The variables a template sees: the lead's fields with their fallbacks, and the service's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LEAD_VARIABLES = ("name", "first_name", "last_name", "company", "title", "email")
KNOWN_VARIABLES = frozenset(
    (
        *LEAD_VARIABLES,
        "attributes",
        "sponsor",
        "event",
        "unsubscribe_url",
        "view_in_browser_url",
        "preferences_url",
        # A message's recipient preference for its category (``preferences.format``).
        "preferences",
    )
)

# What a variable shows when the lead has no value for it.
FALLBACKS = {"name": "there", "first_name": "there"}

SAMPLE_LEAD: dict[str, Any] = {
    "email": "sample@example.com",
    "name": "Sam Sample",
    "first_name": "Sam",
    "last_name": "Sample",
    "company": "Example Corp",
    "title": "Head of Sampling",
    "attributes": {},
}


def personalization(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a template sees for one lead.

    An empty value is left undefined (it renders as "", and ``default(...)``
    applies), except where ``FALLBACKS`` names a word to show instead.
    """
    context: dict[str, Any] = {}
    for key in LEAD_VARIABLES:
        value = lead.get(key) or FALLBACKS.get(key)
        if value:
            context[key] = value
    attributes = lead.get("attributes")
    context["attributes"] = attributes if isinstance(attributes, Mapping) else {}
    preferences = lead.get("preferences")
    if preferences is not None:
        context["preferences"] = preferences
    return context
