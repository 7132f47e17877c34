"""Audience definitions → SQLAlchemy expressions over ``leads`` (bound parameters only).

An audience is a preset (``all``, ``hot``, ``warm``, ``cold``, ``new``,
``contacted``) or ``custom`` with a filter tree in the language of
``service.audiences.filter_language``. ``compile_filter`` turns the parsed
normal form into one SQL expression in which every value is a bound
parameter: field names and operators only ever select code paths here, they
never reach the SQL text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Numeric, and_, case, exists, false, func, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from service.audiences.filter_language import Node, parse_filter
from service.errors import InvalidAudience
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
AUDIENCE_TYPES = (*PRESETS, "custom")

_COLUMNS = {
    "intent_level": leads.c.intent_level,
    "intent_score": leads.c.intent_score,
    "follow_up_status": leads.c.follow_up_status,
    "company": leads.c.company,
    "title": leads.c.title,
    "event_id": leads.c.event_id,
    "created_at": leads.c.created_at,
}


def compile_filter(node: Node) -> ColumnElement[bool]:
    """The SQL expression of a parsed filter; every value is a bound parameter."""
    if "all" in node:
        return and_(true(), *(compile_filter(child) for child in node["all"]))
    if "any" in node:
        return or_(false(), *(compile_filter(child) for child in node["any"]))
    if "not" in node:
        return not_(compile_filter(node["not"]))
    if node["kind"] == "attribute":
        return _attribute_leaf(node["key"], node["op"], node["value"])
    if node["kind"] == "tags":
        return _tags_leaf(node["op"], node["value"])
    return _column_leaf(_COLUMNS[node["field"]], node["op"], node["value"])


def _compare(operand: Any, op: str, value: Any) -> ColumnElement[bool]:
    """``operand OP value`` for the ops that compare; the value becomes a bound parameter."""
    result: ColumnElement[bool]
    if op == "eq":
        result = operand == value
    elif op == "ne":
        result = operand != value
    elif op == "in":
        result = operand.in_(value)
    elif op == "not_in":
        result = operand.not_in(value)
    elif op == "gt":
        result = operand > value
    elif op == "gte":
        result = operand >= value
    elif op == "lt":
        result = operand < value
    elif op == "lte":
        result = operand <= value
    elif op == "between":
        result = operand.between(value[0], value[1])
    elif op == "ilike":
        result = operand.ilike(value)
    else:  # pragma: no cover - parse_filter admits no other op
        raise ValueError(op)
    return result


def _column_leaf(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    present: ColumnElement[bool] = column.is_not(None)
    absent: ColumnElement[bool] = column.is_(None)
    if op == "exists":
        return present if value else absent
    expression = _compare(column, op, value)
    # NULL AND x is false or NULL; the leading test makes it plainly false.
    return and_(present, expression)


def _tags_leaf(op: str, value: Any) -> ColumnElement[bool]:
    tags: Any = leads.c.tags
    if op == "exists":
        nonempty = func.cardinality(tags) > 0
        return nonempty if value else not_(nonempty)
    result: ColumnElement[bool] = (
        tags.overlap(value) if op == "contains_any" else tags.contains(value)
    )
    return result


def _attribute_leaf(key: str, op: str, value: Any) -> ColumnElement[bool]:
    attributes: Any = leads.c.attributes
    present: ColumnElement[bool] = attributes.has_key(key)
    if op == "exists":
        return present if value else not_(present)
    if op in ("eq", "in"):
        values = value if op == "in" else [value]
        # Containment (@>) uses the GIN index on attributes.
        return or_(false(), *(attributes.contains({key: v}) for v in values))
    if op in ("ne", "not_in"):
        values = value if op == "not_in" else [value]
        return and_(present, not_(or_(false(), *(attributes.contains({key: v}) for v in values))))
    item = attributes[key]
    if op == "ilike":
        return and_(present, func.jsonb_typeof(item) == "string", item.astext.ilike(value))
    is_number = func.jsonb_typeof(item) == "number"
    # CASE keeps the cast away from values that are not numbers.
    number = case((is_number, item.astext.cast(Numeric)))
    expression = _compare(number, op, value)
    # ``present`` first: jsonb_typeof of a missing key is NULL, which ``not`` keeps NULL.
    return and_(present, is_number, expression)


def audience_clause(
    sponsor_id: str, audience_type: str, audience_filter: Any = None
) -> ColumnElement[bool]:
    """The sponsor's leads with an email that match the audience (suppressions not applied)."""
    clause = and_(leads.c.sponsor_id == sponsor_id, leads.c.email != "")
    criterion = audience_criterion(audience_type, audience_filter)
    return clause if criterion is None else and_(clause, criterion)


def audience_criterion(
    audience_type: str, audience_filter: Any = None
) -> ColumnElement[bool] | None:
    """What the audience asks of a lead beyond its sponsor and an email; None for ``all``."""
    if audience_type == "custom":
        if audience_filter is None:
            raise InvalidAudience(
                "invalid_filter", "a custom audience needs audience_filter", "audience_filter"
            )
        return compile_filter(parse_filter(audience_filter))
    if audience_type not in PRESETS:
        raise InvalidAudience(
            "unknown_audience_type",
            f"audience_type must be one of {', '.join(AUDIENCE_TYPES)}",
            "audience_type",
        )
    if audience_filter is not None:
        raise InvalidAudience(
            "invalid_filter",
            "audience_filter goes with audience_type 'custom'",
            "audience_filter",
        )
    return PRESETS[audience_type]


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
