"""Leads, their per-audience tallies, and the tombstones of deleted ones."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Identity,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class Lead(Base):
    """A person a sponsor may write to; unique per (sponsor, normalized email)."""

    __tablename__ = "leads"
    __table_args__ = (
        UniqueConstraint(
            "sponsor_id",
            "email",
            name="uq_leads_sponsor_email",
        ),
        # Only what lists, digests and lead writes need: every index costs
        # each lead an import writes (migration 0025).
        Index("ix_leads_sponsor_follow_up", "sponsor_id", "follow_up_status"),
        Index("ix_leads_sponsor_id", "sponsor_id", "id"),
        Index("ix_leads_sponsor_event", "sponsor_id", "event_id"),
        Index("ix_leads_sponsor_created", "sponsor_id", "created_at"),
        Index("ix_leads_tags", "tags", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # No foreign key: the lead triggers check a statement's sponsors at once,
    # and a trigger on sponsors deletes their leads (migration 0022).
    sponsor_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    company: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    intent_level: Mapped[str | None] = mapped_column(String(10))
    intent_score: Mapped[int | None] = mapped_column(SmallInteger)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    follow_up_status: Mapped[str] = mapped_column(String(40), server_default=text("'new'"))
    event_id: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # When upstream lead capture last changed this lead (``leads.v1``); lead sync keeps the newest.
    source_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LeadTally(Base):
    """Leads with an email added (+) or removed (−) per sponsor, intent level,
    follow-up status and whether their address is suppressed, one row per
    statement (written by triggers on ``leads`` and ``suppressions``; see
    migrations 0008 and 0010). Their sum is the exact count of a preset audience."""

    __tablename__ = "lead_tallies"
    __table_args__ = (Index("ix_lead_tallies_sponsor", "sponsor_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(String(64))
    intent_level: Mapped[str | None] = mapped_column(String(10))
    follow_up_status: Mapped[str] = mapped_column(String(40))
    suppressed: Mapped[bool] = mapped_column(Boolean, server_default=false())
    leads: Mapped[int] = mapped_column(BigInteger)


class LeadTombstone(Base):
    """A lead deleted by upstream lead capture, so an older upsert cannot bring it back."""

    __tablename__ = "lead_tombstones"

    sponsor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
