"""Reminder offsets (minutes before an appointment's start): their names and words.

The name is a reminder's part of its timer key (``24h``, ``1h``, ``90m``): the
default offsets keep the keys reminders were set with before offsets were
settable. The words are what the reminder email says (``attributes.reminder``).
"""

from __future__ import annotations

_DAY = 24 * 60


def offset_name(minutes: int) -> str:
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def offset_words(minutes: int) -> str:
    if minutes == _DAY:
        return "tomorrow"
    if minutes % _DAY == 0:
        return f"in {minutes // _DAY} days"
    if minutes == 60:
        return "in one hour"
    if minutes % 60 == 0:
        return f"in {minutes // 60} hours"
    return f"in {minutes} minutes"
