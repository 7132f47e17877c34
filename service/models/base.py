"""Declarative base and the column helpers every model module shares."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import DateTime, Table, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base for every table."""


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, typed as such (for set-based statements)."""
    return cast(Table, model.__table__)


def _now() -> Mapped[datetime]:
    """A not-null timestamp column set by the database when the row is written."""
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
