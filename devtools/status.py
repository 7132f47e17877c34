"""``campaignctl status``: a live terminal view of the campaigns in flight.

One row per queued, sending or paused campaign: a progress bar, the send
rate (measured between refreshes; the average since queueing on the first
view), failures and the time left at the current rate. ``--once`` prints one
snapshot and exits (scripts, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.campaigns import reconciler_repository
from service.db import create_engine, session_factory
from service.settings import Settings


@dataclass
class Row:
    campaign_id: uuid.UUID
    sponsor_id: str
    name: str
    status: str
    total: int
    sent: int
    failed: int
    pending: int
    rate: float  # messages per second
    eta_seconds: float | None

    @property
    def done(self) -> int:
        return max(self.total - self.pending, self.sent + self.failed)


def rows_from(records: list[Any], previous: dict[uuid.UUID, tuple[int, float]]) -> list[Row]:
    """Rows with rates: against the previous snapshot, else the average since queueing."""
    rows = []
    now = time.monotonic()
    for record in records:
        sent = int(record.sent)
        failed = int(record.failed)
        done = sent + failed
        rate = 0.0
        if record.id in previous:
            before, at = previous[record.id]
            if now > at:
                rate = max(done - before, 0) / (now - at)
        elif record.queued_at is not None:
            elapsed = (record.now - record.queued_at).total_seconds()
            rate = done / elapsed if elapsed > 0 else 0.0
        previous[record.id] = (done, now)
        pending = int(record.pending)
        eta = pending / rate if rate > 0 and record.status == "sending" else None
        rows.append(
            Row(
                campaign_id=record.id,
                sponsor_id=record.sponsor_id,
                name=record.name,
                status=record.status,
                total=int(record.total_recipients),
                sent=sent,
                failed=failed,
                pending=pending,
                rate=rate,
                eta_seconds=eta,
            )
        )
    return rows


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def render(rows: list[Row]) -> Table | Group:
    """The table rich draws (also in ``--once`` mode)."""
    if not rows:
        return Group(Text("no campaign is queued, sending or paused"))
    table = Table(title="campaigns in flight", expand=False)
    for column in ("campaign", "sponsor", "status", "progress", "sent", "failed", "rate/s", "ETA"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        bar = ProgressBar(total=max(row.total, 1), completed=row.done, width=24)
        table.add_row(
            f"{row.name[:24]} {str(row.campaign_id)[:8]}",
            row.sponsor_id,
            row.status,
            Group(bar, Text(f"{row.done}/{row.total}")),
            str(row.sent),
            Text(str(row.failed), style="red" if row.failed else ""),
            f"{row.rate:.1f}",
            _eta(row.eta_seconds),
        )
    return table


async def snapshot(
    sessions: async_sessionmaker[AsyncSession], previous: dict[uuid.UUID, tuple[int, float]]
) -> list[Row]:
    async with sessions() as session:
        return rows_from(await reconciler_repository.running_overview(session), previous)


def run_status(
    settings: Settings, *, once: bool, interval: float = 2.0, console: Console | None = None
) -> int:
    """Print the view once, or refresh it every ``interval`` seconds until Ctrl-C."""
    console = console or Console()
    previous: dict[uuid.UUID, tuple[int, float]] = {}

    async def show() -> None:
        engine = create_engine(settings)
        sessions = session_factory(engine)
        try:
            if once:
                console.print(render(await snapshot(sessions, previous)))
                return
            with Live(render([]), console=console, refresh_per_second=4) as view:
                while True:
                    view.update(render(await snapshot(sessions, previous)))
                    await asyncio.sleep(interval)
        finally:
            await engine.dispose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(show())
    return 0
