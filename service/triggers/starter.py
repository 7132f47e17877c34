"""The starter set a sponsor installs with one call: a qualified lead alerts the team
and thanks the lead.

"Qualified" is part of the rule's condition, not a sponsor setting: an upserted
lead whose ``intent_level`` is ``hot`` or whose ``intent_score`` reaches the
threshold given at install (70 unless told). Installing twice changes nothing:
a type or rule the sponsor already has (by key, by name) is kept as it is.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import TOPIC_LEADS
from schemas.messages import MessageTypeIn, VariableIn, VariableType
from schemas.triggers import StarterIn, TriggerActionIn, TriggerRuleIn
from service.messages import repository as message_types
from service.messages import types
from service.models import TriggerRule
from service.triggers import logic, repository

ALERT = "lead.qualified.alert"
THANK_YOU = "lead.thank-you"
RULE_NAME = "Qualified lead: alert the team, thank the lead"

_ALERT_HTML = """\
<h2 style="margin:0 0 12px">A qualified lead: {{ attributes.lead_name }}</h2>
<table role="presentation" cellpadding="6" style="border-collapse:collapse">
  <tr><td><strong>Email</strong></td>
      <td><a href="mailto:{{ attributes.lead_email }}">{{ attributes.lead_email }}</a></td></tr>
  {% if attributes.company %}<tr><td><strong>Company</strong></td>
      <td>{{ attributes.company }}</td></tr>{% endif %}
  {% if attributes.title %}<tr><td><strong>Title</strong></td>
      <td>{{ attributes.title }}</td></tr>{% endif %}
  <tr><td><strong>Intent</strong></td>
      <td>{{ attributes.intent_level }} ({{ attributes.intent_score }}/100)</td></tr>
</table>
<p>Reach out while the interest is fresh: reply to this email to write to the lead.</p>
"""

_THANK_YOU_HTML = """\
<p>Hi {{ attributes.first_name }},</p>
<p>Thank you for your interest in {{ sponsor.name }}. We have your details and
someone from our team will be in touch with you shortly.</p>
<p>Until then, simply reply to this email if there is anything we can help with.</p>
<p>Best regards,<br>The {{ sponsor.name }} team</p>
"""


def _variable(name: str, kind: VariableType, fallback: Any) -> VariableIn:
    return VariableIn(name=name, type=kind, required=False, fallback=fallback)


def _types(body: StarterIn) -> list[MessageTypeIn]:
    alert = MessageTypeIn(
        key=ALERT,
        category="notification",
        subject="Qualified lead: {{ attributes.lead_name }}",
        html_body=_ALERT_HTML,
        variables=[
            VariableIn(name="lead_email", type="string"),
            _variable("lead_name", "string", "A new lead"),
            _variable("company", "string", ""),
            _variable("title", "string", ""),
            _variable("intent_level", "string", "unknown"),
            _variable("intent_score", "number", 0),
        ],
        default_recipients=body.team,
    )
    thank_you = MessageTypeIn(
        key=THANK_YOU,
        category="transactional",
        subject="Thank you for your interest in {{ sponsor.name }}",
        html_body=_THANK_YOU_HTML,
        variables=[_variable("first_name", "string", "there")],
    )
    return [alert, thank_you]


def _rule(body: StarterIn) -> TriggerRuleIn:
    qualified = {
        "all": [
            {"field": "type", "op": "eq", "value": "lead.upserted"},
            {
                "any": [
                    {"field": "intent_level", "op": "eq", "value": "hot"},
                    {"field": "intent_score", "op": "gte", "value": body.qualified_score_threshold},
                ]
            },
        ]
    }
    alert_data = {
        "lead_email": "email",
        "lead_name": "name",
        "company": "company",
        "title": "title",
        "intent_level": "intent_level",
        "intent_score": "intent_score",
    }
    return TriggerRuleIn(
        name=RULE_NAME,
        topic=TOPIC_LEADS,
        condition=qualified,
        # A lead qualifies once: later updates of a hot lead alert nobody again.
        once_per="email",
        actions=[
            TriggerActionIn(message_type=ALERT, recipient="team", data=alert_data),
            TriggerActionIn(
                message_type=THANK_YOU, recipient="lead", data={"first_name": "first_name"}
            ),
        ],
    )


async def install(session: AsyncSession, sponsor_id: str, body: StarterIn) -> list[TriggerRule]:
    """The starter types and rule, each created unless the sponsor has it; the rules."""
    starter = _types(body)
    held = await message_types.types_by_key(
        session, sponsor_id, [t.key for t in starter], platform=False
    )
    for message_type in starter:
        if message_type.key not in held:
            await types.create(session, sponsor_id, message_type)
    rule = await repository.rule_named(session, sponsor_id, RULE_NAME)
    if rule is None:
        rule = await logic.create(session, sponsor_id, _rule(body))
    return [rule]
