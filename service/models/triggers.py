"""Trigger rules (an upstream event → messages) and the (rule, event) pairs that fired."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class TriggerRule(Base):
    """On an event of ``topic`` that meets ``condition``, queue the ``actions``' messages."""

    __tablename__ = "trigger_rules"
    __table_args__ = (Index("ix_trigger_rules_sponsor_topic", "sponsor_id", "topic"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(ForeignKey("sponsors.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    topic: Mapped[str] = mapped_column(String(100))
    # A condition tree as ``service.triggers.condition`` reads it, checked at save.
    condition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # [{"message_type", "recipient", "data": {variable: event path}}].
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # An event path: the rule fires once per distinct value there (once per lead), not
    # once per event. None: once per event.
    once_per: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class TriggerFiring(Base):
    """A rule fired for an event: the key that makes each (rule, event) fire at most once."""

    __tablename__ = "trigger_firings"
    __table_args__ = (Index("ix_trigger_firings_created", "created_at"),)  # retention

    rule_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("trigger_rules.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = _now()
