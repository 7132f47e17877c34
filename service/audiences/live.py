"""Exact live counts of custom audiences from the in-memory index, kept current: the SQL.

Each API process keeps, per sponsor it was asked about, an index of the
sponsor's leads (``service.audiences.bitmaps``) built from one statement, with
that statement's snapshot. Before each count it reads, again in one statement
and so in one snapshot, the change log (migration ``0022_counts``): the rows
of transactions its snapshot did not see, which name the leads written and
the addresses suppressed or lifted since. Those leads are read as they are
now and kept in a small overlay; the count is the index's, the changed leads
left out, plus the overlay's. So the count is exact in the snapshot of that
statement, like a ``SELECT count(*)`` run there.

The index is not used, and SQL counts instead, when the caller's snapshot may
not see everything the index has seen (a transaction older than the index),
when the caller's own transaction has written (its changes are not committed),
or for a filter the index cannot evaluate exactly (``Unsupported``). It is
built anew when the overlay would pass ``OVERLAY_LIMIT`` leads or after
``REBUILD_AFTER_S``; for the preview (``wait=False``) in a task of its own,
SQL counting meanwhile (or the old index answering, when only its age is
past). The retention upkeep deletes rows of the change log older than
``CHANGES_KEPT`` (``prune_changes``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

from pyroaring import BitMap
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.audiences.bitmaps import Index, LeadRow, Parts
from service.audiences.columns import Attribute, Sorted, Unsupported
from service.audiences.filter_language import Node

OVERLAY_LIMIT = 5_000
REBUILD_AFTER_S = 3_600.0
# What one API process keeps in memory: indexes of this many sponsors at most,
# and of this many leads in all.
SPONSORS_KEPT = 16
LEADS_KEPT = 5_000_000
_LEAD_IDS_BELOW = 2**32  # roaring bitmaps hold 32-bit ids

# Both statements answer a first row with their snapshot, whether this
# transaction has written, (catch-up) how many leads changed; then one row per
# lead: (catch-up) the changed id, then the columns of ``LeadRow``. One
# statement, so one snapshot for all of it.
# One statement, so one snapshot: its first row, the rest grouped by the
# database (part, name, value, ids, numbers): ids per value of each column,
# per tag, per attribute key and JSON value, and ids in order of created_at and
# of each attribute's numbers, with those values.
_BUILD = """
WITH a AS (SELECT l.id, e.key, e.value FROM leads AS l, jsonb_each(l.attributes) AS e
           WHERE l.sponsor_id = :sponsor AND jsonb_typeof(l.attributes) = 'object')
SELECT 'snapshot', pg_current_snapshot()::text,
       (pg_current_xact_id_if_assigned() IS NOT NULL)::text, NULL::bigint[], NULL::float8[]
UNION ALL SELECT 'universe', NULL, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND email <> ''
UNION ALL SELECT 'suppressed', NULL, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND email IN
    (SELECT email FROM suppressions WHERE sponsor_id = :sponsor OR sponsor_id IS NULL)
UNION ALL SELECT 'intent_level', intent_level, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND intent_level IS NOT NULL GROUP BY intent_level
UNION ALL SELECT 'follow_up_status', follow_up_status, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND follow_up_status IS NOT NULL GROUP BY follow_up_status
UNION ALL SELECT 'company', company, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND company IS NOT NULL GROUP BY company
UNION ALL SELECT 'title', title, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND title IS NOT NULL GROUP BY title
UNION ALL SELECT 'event_id', event_id, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND event_id IS NOT NULL GROUP BY event_id
UNION ALL SELECT 'score', intent_score::text, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND intent_score IS NOT NULL GROUP BY intent_score
UNION ALL SELECT 'tag', t, NULL, array_agg(id), NULL FROM leads, unnest(tags) AS t
    WHERE sponsor_id = :sponsor AND t IS NOT NULL GROUP BY t
UNION ALL SELECT 'tagged', NULL, NULL, array_agg(id), NULL FROM leads
    WHERE sponsor_id = :sponsor AND cardinality(tags) > 0
UNION ALL SELECT 'created', NULL, NULL, array_agg(id ORDER BY created_at, id),
    array_agg((extract(epoch FROM created_at) * 1000000)::float8 ORDER BY created_at, id)
    FROM leads WHERE sponsor_id = :sponsor
UNION ALL SELECT 'attribute', key, value::text, array_agg(id), NULL FROM a GROUP BY key, value
UNION ALL SELECT 'numbers', key, NULL,
    array_agg(id ORDER BY (value::text)::numeric, id),
    array_agg(CASE WHEN abs((value::text)::numeric) < 1e300 THEN (value::text)::float8 END
              ORDER BY (value::text)::numeric, id)
    FROM a WHERE jsonb_typeof(value) = 'number' GROUP BY key
"""
_CATCH_UP = """
WITH changed AS (
    SELECT lead_ids, emails FROM audience_changes
    WHERE xid >= CAST(:xmin AS text)::xid8
      AND (sponsor_id = :sponsor OR sponsor_id IS NULL)
      AND NOT pg_visible_in_snapshot(xid, CAST(:snapshot AS text)::pg_snapshot)
), ids AS (
    SELECT unnest(lead_ids) AS id FROM changed
    UNION
    SELECT l.id FROM leads AS l JOIN (SELECT unnest(emails) AS email FROM changed) AS e
        ON e.email = l.email
    WHERE l.sponsor_id = :sponsor
), total AS (SELECT count(*) AS n FROM ids)
SELECT pg_current_snapshot()::text, pg_current_xact_id_if_assigned() IS NOT NULL,
       (SELECT n FROM total),
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
UNION ALL
SELECT NULL, NULL, ids.id,
       l.id, l.email <> '', l.intent_level, l.intent_score, l.follow_up_status, l.company,
       l.title, l.event_id, l.tags, l.attributes::text,
       (extract(epoch FROM l.created_at) * 1000000)::bigint,
       EXISTS (SELECT 1 FROM suppressions AS s WHERE s.email = l.email
               AND (s.sponsor_id = l.sponsor_id OR s.sponsor_id IS NULL))
FROM ids LEFT JOIN leads AS l ON l.id = ids.id AND l.sponsor_id = :sponsor
WHERE (SELECT n FROM total) <= :limit
"""
# A transaction that writes leads and stays open longer than this is beyond
# what the index follows: its rows may be pruned before an index sees them.
CHANGES_KEPT = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A PostgreSQL snapshot (``xmin:xmax:xip,…``): which transactions it sees."""

    text: str
    xmin: int
    xmax: int
    running: frozenset[int]

    @classmethod
    def parse(cls, value: str) -> Snapshot:
        xmin, xmax, running = value.split(":")
        return cls(value, int(xmin), int(xmax), frozenset(int(x) for x in running.split(",") if x))

    def within(self, other: Snapshot) -> bool:
        """Whether ``other`` sees every transaction this one sees."""
        return self.xmax <= other.xmax and all(
            xid in self.running for xid in other.running if xid < self.xmax
        )


@dataclass(frozen=True, slots=True)
class _State:
    base: Index
    snapshot: Snapshot
    built: float
    dirty: BitMap
    overlay_rows: dict[int, LeadRow]
    overlay: Index

    def reach(self, node: Node, sample: int) -> Reach:
        base = self.base.reached(node, without=self.dirty)
        overlay = self.overlay.reached(node)
        first = sorted([*islice(base, sample), *islice(overlay, sample)])[:sample]
        return Reach(len(base) + len(overlay), first)


@dataclass(frozen=True, slots=True)
class Reach:
    """How many leads an audience reaches, and the ids of the first ``sample`` of them."""

    count: int
    sample_ids: list[int]


class _TooManyChanges(Exception):
    """More changed leads than the overlay holds: the index is built anew."""


_states: OrderedDict[tuple[str, str], _State] = OrderedDict()
_locks: dict[tuple[str, str], asyncio.Lock] = {}
_building: dict[tuple[str, str], asyncio.Task[None]] = {}
log = logging.getLogger(__name__)


async def count(
    session: AsyncSession, sponsor_id: str, node: Node, *, wait: bool = True
) -> int | None:
    """The audience's exact count in one snapshot, or None when SQL must count it."""
    found = await reach(session, sponsor_id, node, wait=wait)
    return None if found is None else found.count


async def reach(
    session: AsyncSession, sponsor_id: str, node: Node, sample: int = 0, *, wait: bool = True
) -> Reach | None:
    """The audience's exact count in one snapshot and a few of its lead ids, or None when
    SQL must count it.

    ``wait`` False: a sponsor without an index gets one built apart (SQL counts
    meanwhile), and an old index answers while its successor is built.
    """
    key = (str(session.get_bind().engine.url), sponsor_id)
    # One build or catch-up at a time per sponsor: a second caller then catches up.
    async with _locks.setdefault(key, asyncio.Lock()):
        state = _states.get(key)
        stale = state is None or time.monotonic() - state.built >= REBUILD_AFTER_S
        if stale and not wait and isinstance(session.bind, AsyncEngine):
            _build_apart(key, session.bind, sponsor_id)
            if state is None:
                return None
            stale = False  # the old index answers meanwhile
        if state is not None and not stale:
            try:
                state = await _catch_up(session, sponsor_id, state)
            except _TooManyChanges:
                stale = True
                if not wait and isinstance(session.bind, AsyncEngine):
                    _build_apart(key, session.bind, sponsor_id)
                    return None
        if stale:
            state = await _build(session, sponsor_id)
        if state is None:
            return None
        _keep(key, state)
    try:
        return state.reach(node, sample)
    except Unsupported:
        return None


def _build_apart(key: tuple[str, str], engine: AsyncEngine, sponsor_id: str) -> None:
    """Build the sponsor's index in a task of its own, in a transaction of its own."""
    if key in _building:
        return

    async def build() -> None:
        try:
            async with AsyncSession(engine) as session:
                state = await _build(session, sponsor_id)
            if state is not None:
                async with _locks.setdefault(key, asyncio.Lock()):
                    _keep(key, state)
        except Exception:  # the preview goes on counting in SQL; the next one tries again
            log.exception("audience index build failed", extra={"sponsor_id": sponsor_id})
        finally:
            _building.pop(key, None)

    _building[key] = asyncio.create_task(build())


def _keep(key: tuple[str, str], state: _State) -> None:
    """Keep the newer of the two states (another request may have moved it on meanwhile)."""
    current = _states.get(key)
    if current is None or current.snapshot.within(state.snapshot):
        _states[key] = state
    _states.move_to_end(key)
    # Least recently counted first out, past either bound; the newest always stays.
    while len(_states) > 1 and (
        len(_states) > SPONSORS_KEPT
        or sum(len(kept.base.universe) for kept in _states.values()) > LEADS_KEPT
    ):
        _locks.pop(_states.popitem(last=False)[0], None)


async def _build(session: AsyncSession, sponsor_id: str) -> _State | None:
    result = await session.execute(text(_BUILD), {"sponsor": sponsor_id})
    rows = list(result.all())
    snapshot, writing = next((row[1], row[2] == "true") for row in rows if row[0] == "snapshot")
    if writing or any(max(row[3] or [0]) >= _LEAD_IDS_BELOW for row in rows):
        return None
    # Seconds of Python for a large sponsor: off the event loop.
    base = await asyncio.to_thread(_index, rows)
    return _State(base, Snapshot.parse(snapshot), time.monotonic(), BitMap(), {}, Index(Parts()))


def _index(rows: list[Any]) -> Index:
    parts = Parts()
    numbers: dict[str, Sorted] = {}
    groups: list[tuple[str, Any, list[int]]] = []
    for part, name, value, ids, values in rows:
        if part in ("universe", "suppressed", "tagged"):
            setattr(parts, part, ids or [])
        elif part == "created":
            parts.created = Sorted(values or [], ids or [])
        elif part == "score":
            parts.columns["score"][int(name)] = ids
        elif part == "tag":
            parts.tags[name] = ids
        elif part == "attribute":
            groups.append((name, json.loads(value, parse_float=Decimal), ids))
        elif part == "numbers":
            if None not in values:  # else a number past floats: no ranges on that key
                numbers[name] = Sorted(values, ids)
        elif part != "snapshot":
            parts.columns[part][name] = ids
    for key, ordered in numbers.items():
        parts.attributes.setdefault(key, Attribute()).numbers = ordered
    for key, value, ids in groups:
        parts.attributes.setdefault(key, Attribute()).add(value, ids)
    return Index(parts)


async def _catch_up(session: AsyncSession, sponsor_id: str, state: _State) -> _State | None:
    """The state moved on to this statement's snapshot; None if it cannot be."""
    result = await session.execute(
        text(_CATCH_UP),
        {
            "sponsor": sponsor_id,
            "xmin": str(state.snapshot.xmin),
            "snapshot": state.snapshot.text,
            "limit": OVERLAY_LIMIT,
        },
    )
    snapshot: Snapshot | None = None
    writing, total = False, 0
    changed: list[Any] = []
    for row in result:
        if row[0] is not None:
            snapshot, writing, total = Snapshot.parse(row[0]), row[1], row[2]
        else:
            changed.append(row)
    if snapshot is None or writing or not state.snapshot.within(snapshot):
        return None
    if total == 0:
        return state
    if len(state.overlay_rows) + total > OVERLAY_LIMIT:
        raise _TooManyChanges
    if any(row[2] >= _LEAD_IDS_BELOW for row in changed):
        return None
    overlay_rows = dict(state.overlay_rows)
    for row in changed:
        overlay_rows.pop(row[2], None)
        if row[3] is not None:
            overlay_rows[row[2]] = LeadRow(*row[3:])
    dirty = state.dirty | BitMap(row[2] for row in changed)
    overlay = Index.of_rows(overlay_rows.values())
    return _State(state.base, snapshot, state.built, dirty, overlay_rows, overlay)


async def prune_changes(session: AsyncSession, now: datetime) -> int:
    """Delete the change log's rows older than ``CHANGES_KEPT``; how many were."""
    result = await session.execute(
        text("DELETE FROM audience_changes WHERE at < :cutoff"), {"cutoff": now - CHANGES_KEPT}
    )
    return int(getattr(result, "rowcount", 0) or 0)
