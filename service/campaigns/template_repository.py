"""The SQL of a campaign's provider template: measuring its recipients' values and
the record of every template created at the provider (``provider_templates``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.templates.provider_limits import Measure

# Lead fields as the batch query reads them (``sending_repository._LOAD_BATCH``).
_LEAD_COLUMNS = {
    "email": "d.recipient_email",
    "name": "l.name",
    "first_name": "l.first_name",
    "last_name": "l.last_name",
    "company": "l.company",
    "title": "l.title",
}


def _escaped(column: str) -> str:
    """``column`` as ``markupsafe.escape`` writes it (each replacement in its order)."""
    for plain, entity in (("&", "&amp;"), (">", "&gt;"), ("<", "&lt;"), ("'", "&#39;")):
        column = f"replace({column}, '{plain.replace(chr(39), chr(39) * 2)}', '{entity}')"
    return f"replace({column}, '\"', '&#34;')"


async def longest_values(
    session: AsyncSession, campaign_id: uuid.UUID, measures: Iterable[Measure]
) -> dict[Measure, int | None]:
    """The longest value of each measure among the campaign's pending recipients
    (None when none has one), in one statement over its pending rows."""
    wanted = sorted(measures)
    if not wanted:
        return {}
    params: dict[str, object] = {"campaign_id": campaign_id}
    columns: list[str] = []
    for n, (kind, key, escaped) in enumerate(wanted):
        if kind == "lead":
            column = _LEAD_COLUMNS[key]
        else:
            params[f"k{n}"] = key
            column = f"(l.attributes ->> CAST(:k{n} AS text))"
        columns.append(f"max(length({_escaped(column) if escaped else column}))")
    row = (
        await session.execute(
            text(f"""
SELECT {", ".join(columns)}
FROM campaign_deliveries d
LEFT JOIN leads l ON l.id = d.lead_id
WHERE d.campaign_id = :campaign_id AND d.status = 'pending'
"""),  # noqa: S608 - only fixed column expressions are spliced; keys are bound
            params,
        )
    ).one()
    return dict(zip(wanted, row, strict=True))
