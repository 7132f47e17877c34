"""Starter message types: ready-made, professional types a sponsor installs as its own.

``POST …/message-types/starter`` copies the ones asked for (all by default)
into the sponsor's types, where they are edited like any other (``PUT``). A
type the sponsor already has (same key) is kept as it is, so installing twice
changes nothing and never overwrites an edit. Each comes with sample data
(``SAMPLES``), which the documentation shows and the tests render.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.messages import MessageTypeIn, VariableIn, VariableType
from service.errors import Unprocessable
from service.messages import repository, types
from service.messages import starter_templates as bodies
from service.models import MessageType


def _optional(name: str, kind: VariableType, fallback: Any) -> VariableIn:
    return VariableIn(name=name, type=kind, required=False, fallback=fallback)


def _required(name: str, kind: VariableType = "string") -> VariableIn:
    return VariableIn(name=name, type=kind)


_CUSTOMER = _optional("customer_name", "string", "there")
# ``format``: "detailed" (summary, key points, next steps) or "brief" (the summary
# alone); not given, the recipient's preference for summaries decides.
_SUMMARY = [
    _required("summary"),
    _optional("key_points", "list", []),
    _optional("next_steps", "list", []),
    _optional("format", "string", ""),
    _optional("conversation_url", "string", ""),
]


TEAM_KEY = "conversation.summary.team"

_CATALOGUE = (
    MessageTypeIn(
        key="conversation.summary.customer",
        category="transactional",
        preference_category="summaries",
        subject="Summary of our conversation",
        html_body=bodies.CONVERSATION_CUSTOMER,
        variables=[_CUSTOMER, *_SUMMARY],
    ),
    MessageTypeIn(
        key=TEAM_KEY,
        category="notification",
        preference_category="summaries",
        subject="Conversation with {{ attributes.customer_name }} (score {{ attributes.score }})",
        html_body=bodies.CONVERSATION_TEAM,
        variables=[
            _optional("customer_name", "string", "A customer"),
            _optional("customer_email", "string", ""),
            _optional("score", "number", 0),
            *_SUMMARY,
        ],
    ),
    MessageTypeIn(
        key="order.confirmation",
        category="transactional",
        subject="Your order {{ attributes.order_number }} is confirmed",
        html_body=bodies.ORDER_CONFIRMATION,
        variables=[
            _CUSTOMER,
            _required("order_number"),
            # [{"name", "quantity", "price"}], the price formatted by the application.
            _required("line_items", "list"),
            _required("total"),
            _optional("order_url", "string", ""),
        ],
    ),
    MessageTypeIn(
        key="payment.receipt",
        category="transactional",
        subject="Your receipt from {{ sponsor.name }}",
        html_body=bodies.PAYMENT_RECEIPT,
        variables=[
            _CUSTOMER,
            _required("amount"),
            _required("receipt_number"),
            _optional("paid_at", "string", ""),
            _optional("description", "string", ""),
            _optional("payment_method", "string", ""),
            _optional("receipt_url", "string", ""),
        ],
    ),
    MessageTypeIn(
        key="payment.failed",
        category="transactional",
        subject="Your payment of {{ attributes.amount }} did not go through",
        html_body=bodies.PAYMENT_FAILED,
        variables=[
            _CUSTOMER,
            _required("amount"),
            _required("retry_url"),
            _optional("description", "string", ""),
            _optional("reason", "string", ""),
        ],
    ),
    MessageTypeIn(
        key="cancellation.confirmation",
        category="transactional",
        subject="Your cancellation is confirmed",
        html_body=bodies.CANCELLATION_CONFIRMATION,
        variables=[
            _CUSTOMER,
            _optional("cancelled_item", "string", "your subscription"),
            _optional("effective_at", "string", ""),
            _optional("refund_amount", "string", ""),
            _optional("return_url", "string", ""),
        ],
    ),
)


def catalogue(team: Sequence[str] = ()) -> list[MessageTypeIn]:
    """Every starter type; ``team`` becomes the default recipients of the team's type."""
    return [
        t.model_copy(update={"default_recipients": list(team)}) if t.key == TEAM_KEY else t
        for t in _CATALOGUE
    ]


KEYS = tuple(t.key for t in _CATALOGUE)

_POINTS = {
    "key_points": ["You need SSO for 40 seats", "Go-live before March"],
    "next_steps": ["We send a proposal by Friday", "Security review with your IT team"],
}
SAMPLES: dict[str, dict[str, Any]] = {
    "conversation.summary.customer": {
        "customer_name": "Ada",
        "summary": "We discussed moving your team to the Business plan.",
        **_POINTS,
        "conversation_url": "https://app.example.com/c/42",
    },
    "conversation.summary.team": {
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@customer.example",
        "score": 87,
        "summary": "Ada wants the Business plan for her team.",
        **_POINTS,
    },
    "order.confirmation": {
        "customer_name": "Ada",
        "order_number": "A-1042",
        "line_items": [
            {"name": "Analytical Engine", "quantity": 1, "price": "€990.00"},
            {"name": "Punch cards (box)", "quantity": 3, "price": "€30.00"},
        ],
        "total": "€1,080.00",
        "order_url": "https://shop.example.com/orders/A-1042",
    },
    "payment.receipt": {
        "customer_name": "Ada",
        "amount": "€49.00",
        "receipt_number": "R-2026-0042",
        "paid_at": "6 December 2026",
        "description": "Business plan, December",
        "payment_method": "Visa ending 4242",
    },
    "payment.failed": {
        "customer_name": "Ada",
        "amount": "€49.00",
        "description": "Business plan, December",
        "reason": "insufficient funds",
        "retry_url": "https://billing.example.com/retry/abc",
    },
    "cancellation.confirmation": {
        "customer_name": "Ada",
        "cancelled_item": "your Business plan",
        "effective_at": "31 December 2026",
        "refund_amount": "€12.00",
        "return_url": "https://app.example.com/plans",
    },
}


async def install(
    session: AsyncSession, sponsor_id: str, keys: Sequence[str] | None, team: Sequence[str]
) -> list[MessageType]:
    """The starter types asked for, each created unless the sponsor has its key; all of them."""
    wanted = list(dict.fromkeys(keys)) if keys else list(KEYS)
    for i, key in enumerate(wanted):
        if key not in KEYS:
            raise Unprocessable("unknown_message_type", f"no starter type '{key}'", f"keys.{i}")
    held = await repository.types_by_key(session, sponsor_id, wanted, platform=False)
    result = []
    for body in catalogue(team):
        if body.key not in wanted:
            continue
        row = held.get(body.key) or await types.create(session, sponsor_id, body)
        result.append(row)
    return result
