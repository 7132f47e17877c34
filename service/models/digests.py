"""Digest subscriptions (a team member's schedule) and the digests they claimed, one per period."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import UUID
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
