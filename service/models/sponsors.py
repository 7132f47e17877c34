"""Sponsors (tenants) and the per-sponsor limits shared by replicas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class Sponsor(Base):
    """A tenant: whose leads, whose sending identity."""

    __tablename__ = "sponsors"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    from_email: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    postal_address: Mapped[str | None] = mapped_column(String(500))
    can_send_messages: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    hourly_send_cap: Mapped[int | None] = mapped_column(Integer)
    # ``schemas.providers.ProviderChoice``: names of secrets, never a secret; null: the default.
    provider: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class SponsorHourlySends(Base):
    """Messages a sponsor sent per clock hour, reserved before sending (hourly cap)."""

    __tablename__ = "sponsor_hourly_sends"

    sponsor_id: Mapped[str] = mapped_column(
        ForeignKey("sponsors.id", ondelete="CASCADE"), primary_key=True
    )
    hour_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    sent: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class ApiRateCounter(Base):
    """Requests per sponsor, bucket (``create``/``read``) and minute, shared by API replicas."""

    __tablename__ = "api_rate_counters"
    __table_args__ = {"prefixes": ["UNLOGGED"]}  # see migration 0009

    sponsor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer, server_default=text("0"))
