"""The SQL of a campaign's provider template: measuring its recipients' values and
the record of every template created at the provider (``provider_templates``,
migration 0021), from before its creation until the provider deleted it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.campaigns.lifecycle import CampaignStatus
from service.models import CampaignDelivery, Lead
from service.templates.provider_limits import MAX_TEMPLATE_VALUE, Measure

# Lead fields as the batch query reads them (``sending_repository._LOAD_BATCH``).
_LEAD_COLUMNS = {
    "email": "d.recipient_email",
    "name": "l.name",
    "first_name": "l.first_name",
    "last_name": "l.last_name",
    "company": "l.company",
    "title": "l.title",
}


# HTML escaping makes a character at most five ("&" -> "&amp;", '"' -> "&#34;").
_ESCAPED_GROWTH = 5


def _declared(key: str) -> int | None:
    """The declared length of a lead field's column, if it has one."""
    column = (CampaignDelivery.recipient_email if key == "email" else getattr(Lead, key)).type
    length = getattr(column, "length", None)
    return length if isinstance(length, int) else None


def _escaped(column: str) -> str:
    """``column`` as ``markupsafe.escape`` writes it (each replacement in its order)."""
    for plain, entity in (("&", "&amp;"), (">", "&gt;"), ("<", "&lt;"), ("'", "&#39;")):
        column = f"replace({column}, '{plain.replace(chr(39), chr(39) * 2)}', '{entity}')"
    return f"replace({column}, '\"', '&#34;')"


async def longest_values(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    measures: Iterable[Measure],
    limit: int = MAX_TEMPLATE_VALUE,
) -> dict[Measure, int | None]:
    """The longest value of each measure among the campaign's pending recipients
    (None when none has one), in one statement over its pending rows.

    A lead field whose column is declared short enough is answered with that
    bound, unread; a template of such fields alone (the usual case) reads nothing.
    """
    found: dict[Measure, int | None] = {}
    wanted: list[Measure] = []
    for measure in sorted(measures):
        kind, key, escaped = measure
        declared = _declared(key) if kind == "lead" else None
        bound = None if declared is None else declared * (_ESCAPED_GROWTH if escaped else 1)
        if bound is not None and bound <= limit:
            found[measure] = bound
        else:
            wanted.append(measure)
    if not wanted:
        return found
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
    found.update(zip(wanted, row, strict=True))
    return found


async def record_creating(session: AsyncSession, campaign_id: uuid.UUID) -> int:
    """A row for a template about to be created (committed by the caller first); its id."""
    row_id = await session.scalar(
        text("INSERT INTO provider_templates (campaign_id) VALUES (:c) RETURNING id"),
        {"c": campaign_id},
    )
    return int(row_id)


async def record_created(session: AsyncSession, row_id: int, template_id: str) -> None:
    """The provider's id of the row's template, known before it is published."""
    await session.execute(
        text("UPDATE provider_templates SET template_id = :t, state = 'active' WHERE id = :id"),
        {"t": template_id, "id": row_id},
    )


_FINISH_ROWS = text("""
UPDATE provider_templates t SET state = 'finished', finished_at = now()
FROM campaigns c
WHERE c.id = t.campaign_id AND c.status IN (:sent, :cancelled)
  AND t.state IN ('creating', 'active')
""")
_FORGET_DECISIONS = text("""
UPDATE campaigns SET provider_template_id = NULL
WHERE status IN (:sent, :cancelled) AND provider_template_id <> ''
RETURNING id, provider_template_id
""")


async def finish_templates(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    """Start the grace period of the templates of sent and cancelled campaigns; those
    campaigns forget their decision, so a later ``retry-failed`` round decides anew.
    The (campaign, template id) decisions forgotten."""
    done = {"sent": CampaignStatus.SENT.value, "cancelled": CampaignStatus.CANCELLED.value}
    await session.execute(_FINISH_ROWS, done)
    rows = await session.execute(_FORGET_DECISIONS, done)
    return [(row[0], row[1]) for row in rows]


async def due_for_delete(
    session: AsyncSession, grace_seconds: float, limit: int = 100
) -> list[tuple[int, uuid.UUID, str | None]]:
    """(row, campaign, provider id or None) of templates finished ``grace_seconds`` ago."""
    rows = await session.execute(
        text("""
SELECT id, campaign_id, template_id FROM provider_templates
WHERE state = 'finished' AND finished_at <= now() - make_interval(secs => :grace)
ORDER BY finished_at
LIMIT :limit
"""),
        {"grace": grace_seconds, "limit": limit},
    )
    return [(int(row[0]), row[1], row[2]) for row in rows]


async def forget(session: AsyncSession, row_ids: list[int]) -> None:
    """Drop the rows of templates the provider deleted."""
    if row_ids:
        await session.execute(
            text("DELETE FROM provider_templates WHERE id = ANY(:ids)"), {"ids": row_ids}
        )
