"""Digest subscriptions (a team member's schedule) and the digests they claimed, one per period."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class DigestSubscription(Base):
    """A team member who gets the daily digest: when (a cron in their zone) and where."""

    __tablename__ = "digest_subscriptions"
    __table_args__ = (
        UniqueConstraint("sponsor_id", "email", name="uq_digest_subscriptions_sponsor_email"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(ForeignKey("sponsors.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    # An IANA zone: the cron's hours and the digest's "today" are read in it.
    time_zone: Mapped[str] = mapped_column(String(64))
    cron: Mapped[str] = mapped_column(String(200), server_default=text("'0 8 * * *'"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class DigestRun(Base):
    """One period of one subscription, claimed before its digest is written.

    The primary key is what makes a digest go out once per period: a replayed
    timer, or one fired again after a crash, finds the row and sends nothing.
    ``message_id`` is null when the period had nothing to tell (nothing sent).
    """

    __tablename__ = "digest_runs"

    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("digest_subscriptions.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _now()


class DigestEvent(Base):
    """An upstream reply or conversion, kept for the digests of its period.

    Written by the ``trigger`` role from ``conversations.v1`` and ``orders.v1``
    (``service.digests.events``); the key is the event, so a replay adds nothing.
    No foreign key to ``sponsors``: an event for a sponsor the service does not
    know must not fail the consumer's batch; retention removes it with the rest.
    """

    __tablename__ = "digest_events"
    __table_args__ = (Index("ix_digest_events_sponsor_recorded", "sponsor_id", "recorded_at"),)

    topic: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(String(64))
    # ``reply`` or ``conversion`` (docs/digests.md says which events are which).
    kind: Mapped[str] = mapped_column(String(20))
    type: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(320))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    recorded_at: Mapped[datetime] = _now()
