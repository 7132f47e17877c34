"""Cron schedules read in a time zone: when a digest is due, and the period it covers.

``cronsim`` does the calendar work with ``zoneinfo``: a cron time that falls in
a spring-forward gap or a fall-back overlap fires once, as cron does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from service.errors import Unprocessable


def zone_of(name: str, field: str = "time_zone") -> ZoneInfo:
    """The IANA zone ``name``; 422 naming ``field`` if there is none such."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Unprocessable(
            "invalid_time_zone", f"'{name}' is not an IANA time zone", field
        ) from None


def check_cron(expression: str, field: str = "cron") -> None:
    """422 naming ``field`` unless ``expression`` is a five-field cron that ever fires."""
    if len(expression.split()) != 5:
        raise Unprocessable(
            "invalid_cron",
            "a cron expression has five fields: minute hour day month weekday",
            field,
        )
    try:
        next(CronSim(expression, datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC"))))
    except (CronSimError, StopIteration) as exc:
        raise Unprocessable(
            "invalid_cron", f"'{expression}': {exc or 'never fires'}", field
        ) from None


def next_time(expression: str, time_zone: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``expression`` names in ``time_zone``."""
    return next(CronSim(expression, after.astimezone(ZoneInfo(time_zone))))


def previous_time(expression: str, time_zone: str, before: datetime) -> datetime:
    """The last time strictly before ``before`` that ``expression`` names in ``time_zone``."""
    return next(CronSim(expression, before.astimezone(ZoneInfo(time_zone)), reverse=True))


def is_weekly_slot(time_zone: str, start: datetime, end: datetime) -> bool:
    """Whether the period ``[start, end)`` is the member's weekly slot: the first
    digest on or after Monday 00:00 in their zone (the Monday midnight falls in
    ``(start, end]``). A weekday cron's Monday digest is one; so is a weekly one's."""
    zone = ZoneInfo(time_zone)
    local_end = end.astimezone(zone)
    monday = datetime.combine(
        local_end.date() - timedelta(days=local_end.weekday()), datetime.min.time(), zone
    )
    return start < monday <= end
