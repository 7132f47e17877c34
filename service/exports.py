"""CSV exports that are safe to open in a spreadsheet.

Every CSV the API hands out (deliveries, suppressions, analysts' stats) is
written here, so every cell passes through ``safe_cell``. Names, addresses,
error messages and suppression reasons come from leads and providers, not
from the sponsor: a cell such as ``=HYPERLINK("http://evil", "click")`` would
run as a formula when an analyst opens the file. As OWASP advises for CSV
injection, a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return gets a leading single quote, which spreadsheets show as text.
Numbers and dates are written as they are: a negative count is data, not a
formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

# The characters a spreadsheet reads as the start of a formula or a command.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

MEDIA_TYPE = "text/csv; charset=utf-8"


def safe_cell(value: Any) -> Any:
    """One cell as written: text neutralised, dates in ISO 8601, None as empty."""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_PREFIXES) else value
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


def csv_text(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    """``rows`` (and the header line, if given) as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


async def csv_stream(
    header: Sequence[str], chunks: AsyncIterator[Sequence[Sequence[Any]]]
) -> AsyncIterator[bytes]:
    """CSV bytes, one chunk of rows at a time (memory stays flat for any row count)."""
    yield csv_text(header, []).encode()
    async for rows in chunks:
        yield csv_text(None, rows).encode()


def attachment(filename: str) -> dict[str, str]:
    """The headers that make a browser save the body as ``filename``."""
    return {"Content-Disposition": f'attachment; filename="{filename}"'}
