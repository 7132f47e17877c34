"""Audience definitions → SQLAlchemy expressions over ``leads`` (bound parameters only)."""

from __future__ import annotations

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.sql.elements import ColumnElement

from service.errors import Unprocessable
from service.models import Lead, Suppression, table_of

leads = table_of(Lead)
suppressions = table_of(Suppression)

PRESETS: dict[str, ColumnElement[bool] | None] = {
    "all": None,
    "hot": leads.c.intent_level == "hot",
    "warm": leads.c.intent_level == "warm",
    "cold": leads.c.intent_level == "cold",
    "new": leads.c.follow_up_status == "new",
    "contacted": leads.c.follow_up_status != "new",
}


def audience_clause(sponsor_id: str, audience_type: str) -> ColumnElement[bool]:
    """The sponsor's leads with an email that match the audience (suppressions not applied)."""
    if audience_type not in PRESETS:
        raise Unprocessable(
            "unknown_audience_type",
            f"audience_type must be one of {', '.join(PRESETS)}",
            "audience_type",
        )
    clause = and_(leads.c.sponsor_id == sponsor_id, leads.c.email != "")
    preset = PRESETS[audience_type]
    return clause if preset is None else and_(clause, preset)


def suppressed_clause() -> ColumnElement[bool]:
    """True for a lead whose address is suppressed for its sponsor or globally."""
    return exists(
        select(1)
        .select_from(suppressions)
        .where(
            suppressions.c.email == leads.c.email,
            or_(
                suppressions.c.sponsor_id == leads.c.sponsor_id, suppressions.c.sponsor_id.is_(None)
            ),
        )
    )
