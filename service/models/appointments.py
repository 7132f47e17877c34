"""Appointments as the service last heard of them, and the durable timers that remind of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class Appointment(Base):
    """One appointment of a sponsor: its invite's revision (``sequence``) and state."""

    __tablename__ = "appointments"

    sponsor_id: Mapped[str] = mapped_column(
        ForeignKey("sponsors.id", ondelete="CASCADE"), primary_key=True
    )
    appointment_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The invite's SEQUENCE: 0 when booked, one more on every change.
    sequence: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # booked, cancelled or completed.
    state: Mapped[str] = mapped_column(String(20))
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    time_zone: Mapped[str] = mapped_column(String(64))
    lead_email: Mapped[str] = mapped_column(String(320))
    # The latest event as received, what reminders are written from.
    details: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Timer(Base):
    """Something to do at ``due_at``, once: claimed and deleted in the effect's transaction."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_due_at", "due_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    # Who set it, unique: setting it again moves it, cancelling deletes it.
    key: Mapped[str] = mapped_column(Text, unique=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    created_at: Mapped[datetime] = _now()
