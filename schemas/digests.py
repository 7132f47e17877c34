"""Contracts of digest subscriptions (HTTP): who gets the daily digest, and when."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from schemas.http import Body

DEFAULT_CRON = "0 8 * * *"


class DigestSubscriptionIn(Body):
    """A team member's digest: the cron is read in ``time_zone`` (08:00 local unless told)."""

    email: str = Field(max_length=320, examples=["sales@sponsor.example"])
    time_zone: str = Field(max_length=64, description="an IANA zone", examples=["Europe/Berlin"])
    cron: str = Field(
        default=DEFAULT_CRON,
        max_length=200,
        description="five fields, minute hour day month weekday, in the member's zone",
        examples=[DEFAULT_CRON, "30 7 * * 1-5"],
    )


class DigestSubscriptionOut(BaseModel):
    id: uuid.UUID
    email: str
    time_zone: str
    cron: str
    next_digest_at: datetime | None = Field(
        default=None, description="when the next digest is built (UTC); null if none is set"
    )
    created_at: datetime
    updated_at: datetime
