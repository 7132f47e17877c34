"""Contracts of trigger rules (HTTP) and of the generic upstream events they read.

``leads.v1`` keeps its own contract (``schemas.leads``); ``conversations.v1`` and
``orders.v1`` carry a ``DomainEvent``: an id, the sponsor, a type and free data,
with the previous state of that data when the producer knows it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import TOPIC_CONVERSATIONS, TOPIC_LEADS, TOPIC_ORDERS, _Event
from schemas.http import Body

# The topics a rule may name: the trigger role reads every one of them.
TRIGGER_TOPICS = (TOPIC_LEADS, TOPIC_CONVERSATIONS, TOPIC_ORDERS)


class DomainEvent(_Event):
    """An upstream event on ``conversations.v1`` or ``orders.v1`` (key: ``event_id``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(min_length=1, max_length=100, description="unique per event")
    sponsor_id: str = Field(min_length=1, max_length=64)
    type: str = Field(min_length=1, max_length=100, examples=["order.paid"])
    data: dict[str, Any] = Field(default_factory=dict)
    previous: dict[str, Any] | None = Field(
        default=None, description="the data before this event, for `changed_to` conditions"
    )


class TriggerActionIn(Body):
    """One message a rule sends when it fires."""

    message_type: str = Field(max_length=200, examples=["lead.qualified.alert"])
    recipient: str = Field(
        max_length=320,
        description='"lead", "team" (the type\'s default recipients), "event:<path>" '
        "or a fixed address",
        examples=["team"],
    )
    data: dict[str, Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict,
        max_length=50,
        description="message variable → dotted path into the event",
        examples=[{"lead_name": "name", "score": "intent_score"}],
    )


class TriggerRuleIn(Body):
    name: str = Field(min_length=1, max_length=200)
    topic: str = Field(max_length=100, description="one of leads.v1, conversations.v1, orders.v1")
    condition: dict[str, Any] = Field(
        description="all/any/not of {field, op, value} leaves (see docs/messages.md#triggers)"
    )
    actions: list[TriggerActionIn] = Field(min_length=1, max_length=10)
    enabled: bool = True
    once_per: str | None = Field(
        default=None,
        max_length=200,
        description="an event path: fire once per distinct value there (e.g. `email`: once "
        "per lead, however many later events still meet the condition); unset: once per event",
        examples=["email"],
    )


class TriggerRuleOut(BaseModel):
    id: uuid.UUID
    name: str
    topic: str
    condition: dict[str, Any]
    actions: list[TriggerActionIn]
    enabled: bool
    once_per: str | None
    created_at: datetime
    updated_at: datetime


class StarterIn(Body):
    """What the starter rules need: who the team is, and when a lead is qualified."""

    team: list[Annotated[str, Field(max_length=320)]] = Field(
        min_length=1, max_length=20, examples=[["sales@sponsor.example"]]
    )
    qualified_score_threshold: int = Field(default=70, ge=0, le=100)
