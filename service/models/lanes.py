"""The send lanes' heartbeats: which kind of sending has work right now."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base


class SendLane(Base):
    """One row per lane (``campaigns``, ``messages``), refreshed while it has work.

    Unlogged: a heartbeat is worth a second; a crash that forgets it reads as
    "idle", which the next heartbeat corrects.
    """

    __tablename__ = "send_lanes"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    lane: Mapped[str] = mapped_column(String(32), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
