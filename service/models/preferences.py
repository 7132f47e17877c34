"""What each recipient wants from a sponsor, per preference category."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class RecipientPreference(Base):
    """One recipient's choice for one category; no row reads as the defaults.

    A marketing opt-out is not stored here but as the sponsor's ``unsubscribed``
    suppression, which campaigns already exclude (``service/preferences/logic.py``).
    """

    __tablename__ = "recipient_preferences"
    __table_args__ = (
        CheckConstraint(
            "category IN ('marketing', 'summaries', 'reminders', 'alerts', 'digests')",
            name="ck_recipient_preferences_category",
        ),
    )

    sponsor_id: Mapped[str] = mapped_column(
        ForeignKey("sponsors.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    category: Mapped[str] = mapped_column(String(20), primary_key=True)
    opted_out: Mapped[bool] = mapped_column(Boolean, server_default=false())
    frequency: Mapped[str] = mapped_column(String(20), server_default=text("'immediately'"))
    format: Mapped[str] = mapped_column(String(20), server_default=text("'detailed'"))
    updated_at: Mapped[datetime] = _now()
