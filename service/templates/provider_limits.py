"""Whether a campaign's message fits the provider's limits on template variables.

Resend takes at most ``MAX_TEMPLATE_VARIABLES`` variables per template (checked
when the template is built, ``CompiledMessage.provider_template``) and string
values of at most ``MAX_TEMPLATE_VALUE`` characters. A template is chosen for a
whole campaign round, before its first batch, so no recipient may go over:

* a slot that is a bare lead variable (``{{ first_name }}``,
  ``{{ attributes.city }}``, also with ``| default('…')``) is bounded by the
  longest stored value of that field among the campaign's pending recipients
  (``measures`` names them, the repository measures them in one statement),
  HTML-escaped in the HTML part;
* a tracking URL is short, whatever the recipient;
* any other slot (a filter, an ``if`` or ``for`` block) can make a whole body:
  the round sends whole bodies.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.templates.compiled import ProviderTemplate

MAX_TEMPLATE_VALUE = 2000

# A stored value to measure: ("lead", field) or ("attribute", key), and whether
# its length counts after HTML escaping.
Measure = tuple[str, str, bool]


def measures(template: ProviderTemplate, limit: int = MAX_TEMPLATE_VALUE) -> set[Measure] | None:
    """The stored values whose longest lengths bound ``template``'s variables, or None
    when some slot cannot be bounded in advance (the round sends whole bodies)."""
    needed: set[Measure] = set()
    for slots in (template.html_slots, template.text_slots):
        for source in slots.sources:
            if source is None:
                return None
            kind, key, fallback = source
            if fallback > limit:
                return None
            if kind != "url":
                needed.add((kind, key, slots.escaped))
    return needed


def fits(longest: Mapping[Measure, int | None], limit: int = MAX_TEMPLATE_VALUE) -> bool:
    """Whether every measured value (None: no recipient has one) is within the limit."""
    # A missing value renders as "" or a short fallback word ("there").
    return all((length or 0) <= limit for length in longest.values())
