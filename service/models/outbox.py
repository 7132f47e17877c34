"""Kafka messages written in the same transaction as the state they announce."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Identity, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class OutboxMessage(Base):
    """A Kafka message written in the same transaction as the state it announces."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()
