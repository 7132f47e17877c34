"""CSV import of leads: streamed, validated row by row, bulk-loaded in chunks.

The file is read through ``csv`` from a binary file object (the API spools the
request body to a temporary file first, the CLI opens the file), so a
1,000,000-row file never sits in memory: rows are parsed and written
``CHUNK_ROWS`` at a time. Each chunk is copied (binary COPY) into a staging
table and upserted with one set-based statement. Duplicate addresses across
the whole upload are found in a temporary table, not a Python set, for the
same reason; within a chunk, in a dict that lives as long as the chunk.

Format: UTF-8 (a BOM is fine), a header row, ``email`` required. Columns named
like a lead field fill it; ``tags`` holds tags separated by ``;``; any other
column (or ``attributes.<key>``) goes to ``attributes``. Empty cells leave the
stored value alone.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.http import ImportRejectedRow, LeadIn, LeadsImportOut
from service.errors import Unprocessable
from service.leads import repository
from service.leads.logic import validate_lead

CHUNK_ROWS = 20_000
MAX_REPORTED = 1000
MAX_COLUMNS = 200
LEAD_COLUMNS = frozenset(LeadIn.model_fields) - {"attributes"}
_TAG_SPLIT = re.compile(r"[;|]")

Parsed = tuple[int, dict[str, Any] | tuple[str, str, str | None]]


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

    def next_chunk(self, size: int = CHUNK_ROWS) -> list[Parsed]:
        """Up to ``size`` rows as (line, values or rejection); empty at the end of the file."""
        chunk: list[Parsed] = []
        while len(chunk) < size:
            line = self._last_line + 1
            try:
                record = next(self._reader)
            except StopIteration:
                break
            except csv.Error as exc:
                self._last_line = self._reader.line_num
                chunk.append((line, ("malformed_row", str(exc), None)))
                continue
            except UnicodeDecodeError:
                raise Unprocessable(
                    "invalid_encoding", f"near line {line}: the file is not UTF-8", None
                ) from None
            self._last_line = self._reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != len(self.columns):
                message = f"expected {len(self.columns)} fields, found {len(record)}"
                chunk.append((line, ("malformed_row", message, None)))
                continue
            chunk.append((line, validate_lead(self._row(record))))
        return chunk

    def _row(self, record: list[str]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        attributes: dict[str, str] = {}
        for name, cell in zip(self.columns, record, strict=True):
            value = cell.strip()
            if not value:
                continue
            if name == "tags":
                row["tags"] = [t.strip() for t in _TAG_SPLIT.split(value) if t.strip()]
            elif name in LEAD_COLUMNS:
                row[name] = value
            else:
                attributes[name.removeprefix("attributes.")] = value
        if attributes:
            row["attributes"] = attributes
        return row


@dataclass
class Chunk:
    """A chunk of rows ready for the database: the records to stage (one per
    address within the chunk) and the rows rejected, by line."""

    rows: int
    records: list[tuple[Any, ...]]
    rejected: list[tuple[int, str, str, str | None]]
    lines: dict[str, int]  # address → its line in this chunk
    bytes_read: int  # of the file, up to the end of this chunk


def prepare(parser: CsvLeads, size: int = CHUNK_ROWS) -> Chunk | None:
    """The next chunk of the file, validated and deduplicated within itself; None at the end."""
    parsed = parser.next_chunk(size)
    if not parsed:
        return None
    records: list[tuple[Any, ...]] = []
    rejected: list[tuple[int, str, str, str | None]] = []
    first_lines: dict[str, int] = {}
    for line, result in parsed:
        if isinstance(result, tuple):
            rejected.append((line, *result))
            continue
        email = result["email"]
        if (first := first_lines.setdefault(email, line)) != line:
            rejected.append((line, "duplicate_in_upload", f"same address as line {first}", "email"))
            continue
        records.append(repository.staged_record(line, result))
    return Chunk(len(parsed), records, rejected, first_lines, parser.bytes_read)


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


async def _load(
    session: AsyncSession, sponsor_id: str, chunk: Chunk, number: int, tally: ImportTally
) -> None:
    rejected = list(chunk.rejected)
    if chunk.records:
        await repository.stage(session, chunk.records)
        for email, first in (await repository.claim_staged(session, number)).items():
            message = f"same address as line {first}"
            rejected.append((chunk.lines[email], "duplicate_in_upload", message, "email"))
        inserted, updated = await repository.upsert_staged(session, sponsor_id)
        tally.inserted += inserted
        tally.updated += updated
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
    await repository.start_import(session)
    upcoming = asyncio.ensure_future(asyncio.to_thread(prepare, parser))
    number = 0
    try:
        while (chunk := await upcoming) is not None:
            upcoming = asyncio.ensure_future(asyncio.to_thread(prepare, parser))
            number += 1
            await _load(session, sponsor_id, chunk, number, tally)
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
