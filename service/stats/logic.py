"""Figures → rates, totals and CSV rows (denominators in ``schemas.stats``)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from schemas.stats import FIGURES, RATES

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


def with_rates(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The figures plus every rate in percent (None when the denominator is 0)."""
    out = dict(figures)
    for rate, (numerator, denominator) in _RATE_OF.items():
        base = int(figures[denominator])
        out[rate] = round(100.0 * int(figures[numerator]) / base, 2) if base else None
    return out


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    summed = dict.fromkeys(("recipients", *FIGURES), 0)
    for row in rows:
        for name in summed:
            summed[name] += int(row[name])
    return with_rates(summed)


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


def csv_text(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


async def csv_stream(
    header: Sequence[str], chunks: AsyncIterator[Sequence[Sequence[Any]]]
) -> AsyncIterator[bytes]:
    """CSV bytes, one chunk of rows at a time (memory stays flat for any row count)."""
    yield csv_text(header, []).encode()
    async for rows in chunks:
        yield csv_text(None, rows).encode()


ANALYST_COLUMNS = (
    "campaign_id", "sponsor_id", "event_id", "name", "status", "created_at", "recipients",
    *FIGURES, *RATES,
)  # fmt: skip
