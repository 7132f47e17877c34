"""CSV import of leads: streamed, validated row by row, bulk-loaded in chunks.

The file is read through ``csv`` from a binary file object (the API spools the
request body to a temporary file first, the CLI opens the file), so a
1,000,000-row file never sits in memory: rows are parsed and written
``CHUNK_ROWS`` at a time. A row of common shape goes straight from its cells
to its staging record (``service.leads.csv_rows``), any other row through the
full validation. Each chunk is written out as COPY's CSV in the parser's
thread, copied into a staging table and upserted with one set-based
statement. Duplicate addresses across the whole upload are found in a
temporary table, not a Python set, for the same reason (memory); within a
chunk, in a dict that lives as long as the chunk.

Format: UTF-8 (a BOM is fine), a header row, ``email`` required. Columns named
like a lead field fill it; ``tags`` holds tags separated by ``;``; any other
column (or ``attributes.<key>``) goes to ``attributes``. Empty cells leave the
stored value alone.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.http import ImportRejectedRow, LeadIn, LeadsImportOut
from service.errors import Unprocessable
from service.leads import import_repository, repository
from service.leads.csv_rows import ATTRIBUTE_PREFIX, RowPlan, copy_ready, split_tags
from service.leads.logic import validate_lead

CHUNK_ROWS = 20_000
MAX_REPORTED = 1000
MAX_COLUMNS = 200
LEAD_COLUMNS = frozenset(LeadIn.model_fields) - {"attributes"}


class Rejection(NamedTuple):
    code: str
    message: str
    field: str | None


# A row as (line, its staging record or why it is rejected).
Parsed = tuple[int, tuple[Any, ...] | Rejection]


class CsvLeads:
    """Parses a CSV file of leads, one chunk of rows at a time (synchronous, for a thread)."""

    def __init__(self, binary: IO[bytes]) -> None:
        self._binary = binary
        self._text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(self._text, strict=True)
        self._last_line = 0
        try:
            header = next(self._reader, None)
        except UnicodeDecodeError:
            raise Unprocessable(
                "invalid_encoding", "near line 1: the file is not UTF-8", None
            ) from None
        except csv.Error as exc:
            raise Unprocessable("invalid_csv", f"line 1: {exc}", "header") from None
        self._last_line = self._reader.line_num
        if not header:
            raise Unprocessable("empty_file", "the file has no header row", "header")
        self.columns = [name.strip().lower() for name in header]
        self._check_header()
        self._plan = RowPlan(self.columns, LEAD_COLUMNS)

    def _check_header(self) -> None:
        if len(self.columns) > MAX_COLUMNS:
            raise Unprocessable("invalid_header", f"at most {MAX_COLUMNS} columns", "header")
        seen: set[str] = set()
        for name in self.columns:
            if not name or name == "attributes" or name == "attributes.":
                raise Unprocessable(
                    "invalid_header", f"column '{name[:64]}' cannot be imported", "header"
                )
            if name in seen:
                raise Unprocessable("invalid_header", f"column '{name[:64]}' twice", "header")
            seen.add(name)
        if "email" not in seen:
            raise Unprocessable("invalid_header", "the header has no 'email' column", "header")

    @property
    def bytes_read(self) -> int:
        try:
            return self._binary.tell()
        except (OSError, ValueError):
            return 0

    def rows(self, size: int = CHUNK_ROWS) -> Iterator[Parsed]:
        """The next ``size`` rows (fewer at the end of the file), one at a time."""
        for _ in range(size):
            if (row := self._next_row()) is None:
                return
            yield row

    def _next_row(self) -> Parsed | None:
        """The next row that is not blank, None at the end of the file."""
        while True:
            line = self._last_line + 1
            try:
                record = next(self._reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                self._last_line = self._reader.line_num
                return line, Rejection("malformed_row", str(exc), None)
            except UnicodeDecodeError:
                raise Unprocessable(
                    "invalid_encoding", f"near line {line}: the file is not UTF-8", None
                ) from None
            self._last_line = self._reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != len(self.columns):
                message = f"expected {len(self.columns)} fields, found {len(record)}"
                return line, Rejection("malformed_row", message, None)
            return line, self._record(line, record)

    def _record(self, line: int, record: list[str]) -> tuple[Any, ...] | Rejection:
        if self._plan.usable and (staged := self._plan.record(line, record)) is not None:
            return staged
        result = validate_lead(self._row(record))
        if isinstance(result, tuple):
            return Rejection(*result)
        return copy_ready(repository.staged_record(line, result))

    def _row(self, record: list[str]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        attributes: dict[str, str] = {}
        for name, cell in zip(self.columns, record, strict=True):
            value = cell.strip()
            if not value:
                continue
            if name == "tags":
                row["tags"] = split_tags(value)
            elif name in LEAD_COLUMNS:
                row[name] = value
            else:
                attributes[name.removeprefix(ATTRIBUTE_PREFIX)] = value
        if attributes:
            row["attributes"] = attributes
        return row


@dataclass
class Chunk:
    """A chunk of rows ready for the database: the staging records (one per
    address within the chunk) as COPY's CSV, and the rows rejected, by line."""

    rows: int
    staged: bytes
    rejected: list[tuple[int, str, str, str | None]]
    bytes_read: int  # of the file, up to the end of this chunk


def prepare(parser: CsvLeads, size: int = CHUNK_ROWS) -> Chunk | None:
    """The next chunk of the file, validated and deduplicated within itself; None at the end.

    The records are written out as text here, in the parser's thread: no
    per-row objects outlive the row (so the garbage collector has nothing to
    walk), and the event loop only sends bytes.
    """
    rows = 0
    staged = io.StringIO()
    # COPY's CSV: an empty field is NULL; a staged text is never empty.
    writer = csv.writer(staged, lineterminator="\n")
    rejected: list[tuple[int, str, str, str | None]] = []
    first_lines: dict[str, int] = {}
    for line, result in parser.rows(size):
        rows += 1
        if isinstance(result, Rejection):
            rejected.append((line, *result))
            continue
        email = result[1]
        if (first := first_lines.setdefault(email, line)) != line:
            rejected.append((line, "duplicate_in_upload", f"same address as line {first}", "email"))
            continue
        writer.writerow(result)
    if not rows:
        return None
    return Chunk(rows, staged.getvalue().encode(), rejected, parser.bytes_read)


@dataclass
class ImportTally:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    rejected_count: int = 0
    rejected: list[ImportRejectedRow] = field(default_factory=list)

    def reject(self, line: int, code: str, message: str, field: str | None) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REPORTED:
            self.rejected.append(
                ImportRejectedRow(line=line, code=code, message=message, field=field)
            )

    def out(self) -> LeadsImportOut:
        return LeadsImportOut(
            rows=self.rows,
            inserted=self.inserted,
            updated=self.updated,
            rejected_count=self.rejected_count,
            rejected=self.rejected,
        )


async def _load(session: AsyncSession, sponsor_id: str, chunk: Chunk, tally: ImportTally) -> None:
    rejected = list(chunk.rejected)
    if chunk.staged:
        done = await import_repository.upsert(session, sponsor_id)
        tally.inserted += done.inserted
        tally.updated += done.updated
        for line, first in done.duplicates:
            message = f"same address as line {first}"
            rejected.append((line, "duplicate_in_upload", message, "email"))
    tally.rows += chunk.rows
    for rejection in sorted(rejected):
        tally.reject(*rejection)


async def import_csv(
    session: AsyncSession,
    sponsor_id: str,
    binary: IO[bytes],
    progress: Callable[[int], None] | None = None,
) -> LeadsImportOut:
    """Upsert every valid row of a CSV file; report the others by line (one transaction).

    The next chunk is parsed and validated in a thread while the database
    loads the current one, so Python's work and PostgreSQL's overlap.
    """
    parser = await asyncio.to_thread(CsvLeads, binary)
    tally = ImportTally()
    await import_repository.start(session)
    upcoming = asyncio.ensure_future(asyncio.to_thread(prepare, parser))
    try:
        while (chunk := await upcoming) is not None:
            # Staged before the next chunk's parsing starts: the thread would
            # slow every step of the event loop's down while it holds the GIL.
            if chunk.staged:
                await import_repository.stage(session, chunk.staged)
            upcoming = asyncio.ensure_future(asyncio.to_thread(prepare, parser))
            await _load(session, sponsor_id, chunk, tally)
            if progress is not None:
                progress(chunk.bytes_read)
    finally:
        # A failed load leaves the parser busy in its thread: let it finish
        # before the caller closes the file under it.
        if not upcoming.done():
            await asyncio.wait([upcoming])
        if upcoming.done() and not upcoming.cancelled():
            upcoming.exception()  # retrieved, so it is not logged as never retrieved
    return tally.out()
