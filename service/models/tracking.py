"""What happened to deliveries (the event log) and the addresses never to write to."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class DeliveryEvent(Base):
    """Append-only log of what happened to deliveries (opens, clicks, webhooks).

    Range-partitioned by ``occurred_at``, one partition a day (migration 0015).
    """

    __tablename__ = "delivery_events"
    __table_args__ = (
        Index("ix_delivery_events_campaign_time", "campaign_id", "occurred_at"),
        Index("ix_delivery_events_delivery", "delivery_id"),
        Index(
            "ix_delivery_events_unmatched",
            "recorded_at",
            postgresql_where=text("delivery_id IS NULL"),
        ),
    )

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    delivery_id: Mapped[int | None] = mapped_column(BigInteger)
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    type: Mapped[str] = mapped_column(String(40))
    # Part of the key: the partition key, and an event's own (a replay keeps it).
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    link_position: Mapped[int | None] = mapped_column(Integer)
    is_machine: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    ip_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    recorded_at: Mapped[datetime] = _now()


class Suppression(Base):
    """An address never to write to: for one sponsor, or for all (``sponsor_id`` NULL)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        Index(
            "uq_suppressions_scope_email",
            text("coalesce(sponsor_id, '')"),
            "email",
            unique=True,
        ),
        Index("ix_suppressions_email", "email"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sponsor_id: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _now()
