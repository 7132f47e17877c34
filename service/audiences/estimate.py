"""How far an audience estimate from a random sample can be off: a Wilson score interval.

An estimate draws leads uniformly at random (with replacement) from the
sponsor's leads with an email, whose number ``population`` is known exactly
(the tallies), and sees ``hits`` of ``drawn`` match the audience. The share
that matches then has a Wilson score interval at the chosen confidence; scaled
by the population and clipped to what is known for sure (at least the leads
already seen, at most the population), it becomes ``count ± error_bound``.

Wilson rather than the textbook ``p ± z·sqrt(p(1-p)/n)``: that one collapses to
a zero width when no drawn lead matches, or all do, which is exactly when a
narrow or a broad filter is estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Estimate:
    """``count ± error_bound`` holds the true count with probability ``confidence``."""

    count: int
    error_bound: int
    confidence: float = CONFIDENCE


def wilson_interval(hits: int, drawn: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The (low, high) share of a Wilson score interval for ``hits`` out of ``drawn``."""
    if drawn <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = hits / drawn
    denominator = 1 + z * z / drawn
    centre = (share + z * z / (2 * drawn)) / denominator
    half = z * math.sqrt(share * (1 - share) / drawn + z * z / (4 * drawn * drawn)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(
    hits: int, drawn: int, population: int, at_least: int = 0, confidence: float = CONFIDENCE
) -> Estimate:
    """The audience's size from a sample, with its bound; ``at_least`` leads are known to match."""
    low_share, high_share = wilson_interval(hits, drawn, confidence)
    high = min(float(population), population * high_share)
    low = min(high, max(float(at_least), population * low_share))
    return Estimate(
        count=round((low + high) / 2),
        error_bound=math.ceil((high - low) / 2),
        confidence=confidence,
    )
