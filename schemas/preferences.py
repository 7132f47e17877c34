"""Contracts of recipient preferences: per category, what a recipient wants from a sponsor."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from schemas.http import Body

PreferenceCategory = Literal["marketing", "summaries", "reminders", "alerts", "digests"]
Frequency = Literal["immediately", "daily", "weekly"]
Format = Literal["detailed", "brief"]

CATEGORIES: tuple[PreferenceCategory, ...] = (
    "marketing",
    "summaries",
    "reminders",
    "alerts",
    "digests",
)
# Where holding messages for a digest makes sense; any other category is always immediate.
BATCHED: frozenset[str] = frozenset(("alerts", "summaries"))


class CategoryPreference(BaseModel):
    """One category's preference as it applies (defaults where nothing was chosen)."""

    opted_out: bool = False
    frequency: Frequency = "immediately"
    format: Format = "detailed"


class CategoryPreferenceIn(Body):
    """A partial change to one category: fields left out keep their value."""

    opted_out: bool | None = None
    frequency: Frequency | None = None
    format: Format | None = None


class PreferencesIn(Body):
    """A partial update: only the categories given change."""

    marketing: CategoryPreferenceIn | None = None
    summaries: CategoryPreferenceIn | None = None
    reminders: CategoryPreferenceIn | None = None
    alerts: CategoryPreferenceIn | None = None
    digests: CategoryPreferenceIn | None = None


class PreferencesOut(BaseModel):
    """Every category of one recipient of one sponsor."""

    email: str
    marketing: CategoryPreference
    summaries: CategoryPreference
    reminders: CategoryPreference
    alerts: CategoryPreference
    digests: CategoryPreference
