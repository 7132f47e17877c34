"""The partitions of the partitioned tables, for retention."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class TablePartition(Base):
    """A partition of ``campaign_deliveries`` (an id range) or ``delivery_events`` (a day),
    and the time its newest row cannot be after (NULL while it still takes rows)."""

    __tablename__ = "table_partitions"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    parent: Mapped[str] = mapped_column(Text)
    low_id: Mapped[int | None] = mapped_column(BigInteger)
    high_id: Mapped[int | None] = mapped_column(BigInteger)
    low_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    high_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    newest_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
