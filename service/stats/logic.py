"""Figures → rates and totals (denominators in ``schemas.stats``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.stats import FIGURES, RATES
from service import exports
from service.stats import repository

_RATE_OF = {
    "delivery_rate": ("delivered", "sent"),
    "bounce_rate": ("bounced", "sent"),
    "open_rate": ("opened", "delivered"),
    "click_rate": ("clicked", "delivered"),
    "click_to_open_rate": ("clicked", "opened"),
    "complaint_rate": ("complained", "delivered"),
    "unsubscribe_rate": ("unsubscribed", "delivered"),
}
assert set(_RATE_OF) == set(RATES)


def with_rates(figures: Mapping[str, Any], rates: Iterable[str] = RATES) -> dict[str, Any]:
    """The figures plus each of ``rates`` in percent (None when the denominator is 0)."""
    out = dict(figures)
    for rate in rates:
        numerator, denominator = _RATE_OF[rate]
        base = int(figures[denominator])
        out[rate] = round(100.0 * int(figures[numerator]) / base, 2) if base else None
    return out


async def campaign_stats(
    connection: AsyncConnection,
    sponsor_id: str,
    campaign_id: uuid.UUID,
    timeline: str | None = None,
) -> dict[str, Any] | None:
    """The body of ``GET …/campaigns/{id}/stats``: status, recipients, figures, rates,
    per-link clicks and, with ``timeline`` (``hour`` or ``day``), the UTC buckets; None
    when the sponsor has no such campaign. The report page shows exactly this."""
    figures = await repository.campaign_figures(connection, sponsor_id, campaign_id)
    if figures is None:
        return None
    points = await repository.timeline(connection, campaign_id, timeline) if timeline else None
    return {
        "campaign_id": campaign_id,
        "status": figures.pop("status"),
        "total_recipients": figures["total_recipients"],
        "recipients": figures.pop("total_recipients"),
        **with_rates(figures),
        "timeline": points,
    }


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    summed = dict.fromkeys(("recipients", *FIGURES), 0)
    for row in rows:
        for name in summed:
            summed[name] += int(row[name])
    return with_rates(summed)


ANALYST_COLUMNS = (
    "campaign_id", "sponsor_id", "event_id", "name", "status", "created_at", "recipients",
    *FIGURES, *RATES,
)  # fmt: skip


def deliveries_csv(engine: AsyncEngine, campaign_id: uuid.UUID) -> AsyncIterator[bytes]:
    """Every delivery row of a campaign as CSV bytes, streamed from a server-side cursor."""
    chunks = repository.stream_deliveries(engine, campaign_id)
    return exports.csv_stream(repository.DELIVERY_COLUMNS, chunks)
