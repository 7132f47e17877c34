"""A/B tests of campaigns: the variants and settings a campaign is created with, the
hand-picked winner, and the per-variant figures (``docs/ab-tests.md``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Measure = Literal["open_rate", "click_rate", "click_to_open_rate"]
Fallback = Literal["first", "best_so_far"]

# Variants are named by position: the first is "A".
VARIANT_NAMES = "ABCDEF"
MIN_VARIANTS, MAX_VARIANTS = 2, len(VARIANT_NAMES)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class VariantIn(_Body):
    """What a variant changes; a field left out is the campaign's own."""

    subject: str | None = Field(default=None, min_length=1, max_length=998)
    message_body: str | None = Field(default=None, min_length=1, max_length=200_000)
    html_body: str | None = Field(default=None, max_length=500_000)
    text_body: str | None = Field(default=None, max_length=200_000)
    sender_name: str | None = Field(default=None, min_length=1, max_length=200)
    preheader: str | None = Field(default=None, min_length=1, max_length=500)


class ABTestIn(_Body):
    """How the test runs: its share of the audience, the wait, the measure, the fallback."""

    test_share: int = Field(
        ge=1, le=50, description="percent of the audience, split evenly between the variants"
    )
    wait_seconds: int = Field(
        ge=0, le=30 * 86_400, description="after the test share is sent, before choosing"
    )
    measure: Measure = "open_rate"
    fallback: Fallback = "first"


class WinnerIn(_Body):
    variant: str = Field(min_length=1, max_length=1, pattern=f"^[{VARIANT_NAMES}]$")


class VariantStatsOut(BaseModel):
    variant: str
    subject: str
    sent: int
    delivered: int
    opened: int
    clicked: int
    open_rate: float
    click_rate: float
    click_to_open_rate: float
    # Against the leader by the test's measure (None for the leader itself).
    p_value: float | None
    confidence: float | None
    leader: bool
    winner: bool


class VariantsOut(BaseModel):
    campaign_id: str
    status: str
    measure: Measure
    test_share: int
    wait_seconds: int
    fallback: Fallback
    decide_at: datetime | None
    variants: list[VariantStatsOut]
    decision: dict[str, Any] | None
