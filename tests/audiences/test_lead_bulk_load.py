"""Leads in at bulk-load speed: the validation fast path agrees with the full rules,
and the staged, set-based upsert keeps the cells rule and the tallies exact."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.leads import repository
from service.leads.csv_import import CHUNK_ROWS, CsvLeads, import_csv
from service.leads.csv_rows import copy_ready
from service.leads.logic import full_validation, validate_lead
from service.leads.validation import fast_email, fast_lead
from tests.audiences.test_audience_tallies import _check

TRICKY_ADDRESSES = [
    "a@b.com",
    "Ada.Lovelace+News@Mail.Example.CO.UK",
    "x'o=y_z-1@sub-domain.example.org",
    "x@localhost",
    "x@foo.test",
    "x@printer.local",
    "x@hidden.onion",
    "x@b.arpa",
    "x@b.invalid",
    "x@xn--bcher-kva.com",
    "x@ab--cd.com",
    "x@xn--p1ai.xn--p1ai",
    "x@a-.com",
    "x@-a.com",
    "x@a.c",
    "x@1.23",
    "x@a.123",
    "x@a..com",
    ".x@a.com",
    "x.@a.com",
    "x..y@a.com",
    "é@b.com",
    "a@bücher.de",
    "\u212a@b.com",
    "a" * 64 + "@b.com",
    "a" * 65 + "@b.com",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "a@" + ".".join(["b" * 60] * 4) + ".com",
    " a@b.com",
    "a@b.com ",
    "a b@b.com",
    "a@b_c.com",
    "_@b.com",
    "@b.com",
    "a@",
    "a@b.com.",
    "a@.b.com",
    "a@b@c.com",
    '"a"@b.com',
    "a@[1.2.3.4]",
    "a@b.c0m",
    "a{b}@b.com",
    "a@b.museum",
]

ROWS: list[dict[str, Any]] = [
    {"email": "a@b.com", "intent_score": "090"},
    {"email": "a@b.com", "intent_score": "100"},
    {"email": "a@b.com", "intent_score": "101"},
    {"email": "a@b.com", "intent_score": 100},
    {"email": "a@b.com", "intent_score": True},
    {"email": "a@b.com", "intent_score": "٣"},
    {"email": "a@b.com", "intent_score": None},
    {"email": "a@b.com", "name": " x"},
    {"email": "a@b.com", "name": "x\u3000"},
    {"email": "a@b.com", "name": "\u180ex"},
    {"email": "a@b.com", "name": "\x1cx"},
    {"email": "a@b.com", "name": ""},
    {"email": "a@b.com", "name": "x" * 200},
    {"email": "a@b.com", "name": "x" * 201},
    {"email": "a@b.com", "name": "a\x00b"},
    {"email": "a@b.com", "name": 5},
    {"email": "a@b.com", "tags": ["a", " b"]},
    {"email": "a@b.com", "tags": ["vip", "enterprise"]},
    {"email": "a@b.com", "tags": []},
    {"email": "a@b.com", "tags": None},
    {"email": "a@b.com", "tags": ["t"] * 51},
    {"email": "a@b.com", "attributes": {" k": "v"}},
    {"email": "a@b.com", "attributes": {"k": "v", "n": 5, "b": True, "z": None}},
    {"email": "a@b.com", "attributes": {"k": 1.5, "big": 2**70}},
    {"email": "a@b.com", "attributes": {"k": "é" * 2000}},
    {"email": "a@b.com", "attributes": {"k": "x" * 16_400}},
    {"email": "a@b.com", "attributes": {"k": " v "}},
    {"email": "a@b.com", "attributes": None},
    {"email": "a@b.com", "follow_up_status": "won"},
    {"email": "a@b.com", "follow_up_status": None},
    {"email": "a@b.com", "intent_level": "hot", "company": None},
    {"email": "a@b.com", "intent_level": "HOT"},
    {"email": "a@b.com", "event_id": "e" * 65},
    {"email": "a@b.com", "unknown": "x"},
    {"email": 5},
]


def _full_email(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


@pytest.mark.parametrize("address", TRICKY_ADDRESSES)
def test_the_fast_address_check_agrees_with_email_validator(address: str) -> None:
    fast = fast_email(address)
    assert fast is None or fast == _full_email(address)


@pytest.mark.parametrize("row", ROWS, ids=[str(i) for i in range(len(ROWS))])
def test_the_fast_row_check_agrees_with_the_full_validation(row: dict[str, Any]) -> None:
    fast = fast_lead(row)
    assert fast is None or fast == full_validation(row)
    assert validate_lead(row) == full_validation(row)


def test_common_rows_take_the_fast_path() -> None:
    row = {
        "email": "Ada@Example.com",
        "name": "Ada",
        "intent_level": "hot",
        "intent_score": "90",
        "tags": ["vip"],
        "attributes": {"booth": "A1"},
    }
    assert fast_lead(row) == {**row, "email": "ada@example.com", "intent_score": 90}
    assert fast_email("first.last+tag@mail.example.co.uk") == "first.last+tag@mail.example.co.uk"


CSV_HEADER = "email,name,intent_level,intent_score,tags,follow_up_status,booth,attributes.Note"
CSV_ROWS: list[list[str]] = [
    ["Ada@Example.com", "Ada", "hot", "90", "vip;enterprise", "new", "A1", "x"],
    [" a@b.com ", " Ada ", "", "", "", "", "", ""],
    ["a@b.com", "", "", "", ";", "", "", ""],
    ["a@b.com", "", "", "", " a | b ;; c ", "", "", ""],
    ["a@b.com", "", "", "", 'q"uote;back\\slash', "", "", ""],
    ["a@b.com", "", "", "", ";".join(["t"] * 51), "", "", ""],
    ["a@b.com", "", "", "", "t" * 101, "", "", ""],
    ["a@b.com", "", "", "", "t\x00", "", "", ""],
    ["a@b.com", "x" * 201, "", "", "", "", "", ""],
    ["a@b.com", "a\x00b", "", "", "", "", "", ""],
    ["a@b.com", "", "HOT", "", "", "", "", ""],
    ["a@b.com", "", "", "101", "", "", "", ""],
    ["a@b.com", "", "", "090", "", "", "", ""],
    ["a@b.com", "", "", "٣", "", "", "", ""],
    ["a@b.com", "", "", "", "", "s" * 41, "", ""],
    ["a@b.com", "", "", "", "", "", 'say "hi", then\nleave', "é" * 2000],
    ["a@b.com", "", "", "", "", "", 'say "hi", then\nleave', "\\N"],
    ["a@b.com", "", "", "", "", "", "x" * 16_400, ""],
    ["a@b.com", "", "", "", "", "", "a\x00", ""],
    ["é@b.com", "", "", "", "", "", "", ""],
    ["x@localhost", "", "", "", "", "", "", ""],
    ["", "Nobody", "", "", "", "", "", ""],
]


def _general_record(parser: CsvLeads, line: int, cells: list[str]) -> Any:
    result = validate_lead(parser._row(cells))
    return (
        result if isinstance(result, tuple) else copy_ready(repository.staged_record(line, result))
    )


@pytest.mark.parametrize("cells", CSV_ROWS, ids=[str(i) for i in range(len(CSV_ROWS))])
def test_the_csv_row_plan_agrees_with_the_general_path(cells: list[str]) -> None:
    parser = CsvLeads(io.BytesIO(CSV_HEADER.encode()))
    planned = parser._plan.record(7, cells)
    assert planned is None or planned == _general_record(parser, 7, cells)


def test_common_csv_rows_take_the_row_plan() -> None:
    parser = CsvLeads(io.BytesIO(CSV_HEADER.encode()))
    planned = parser._plan.record(2, CSV_ROWS[0])
    assert planned is not None and planned == _general_record(parser, 2, CSV_ROWS[0])
    assert planned[1] == "ada@example.com"
    assert '{"vip","enterprise"}' in planned


def test_a_header_with_a_column_the_plan_has_no_rule_for_takes_the_general_path() -> None:
    assert not CsvLeads(io.BytesIO(b"email,attributes. x\n"))._plan.usable
    assert CsvLeads(io.BytesIO(b"email,attributes.x\n"))._plan.usable


async def test_a_big_import_with_updates_and_duplicates_keeps_the_tallies_exact(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = {**token(sponsor), "Content-Type": "text/csv"}
    url = f"/api/v1/sponsors/{sponsor}/leads/import"
    levels, statuses = ["hot", "warm", "cold", ""], ["new", "contacted", "won"]
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO suppressions (sponsor_id, email, reason) "
                "SELECT :s, 'b' || n || '@tally.example', 'unsubscribed' "
                "FROM generate_series(0, 3000, 7) AS n"
            ),
            {"s": sponsor},
        )
    first = "\n".join(f"b{n}@tally.example,{levels[n % 4]},{statuses[n % 3]}" for n in range(3000))
    response = await client.post(
        url, headers=headers, content=f"email,intent_level,follow_up_status\n{first}\n"
    )
    assert response.json()["inserted"] == 3000
    await _check(sessions, sponsor)
    # Over two chunks: half the leads change level and status, new ones come,
    # some addresses come twice (the first row wins), empty cells keep values.
    rows = [
        f"b{n}@tally.example,{levels[(n + 1) % 4]},{statuses[(n + 2) % 3]}" for n in range(1500)
    ]
    rows += [f"b{n}@tally.example,," for n in range(1500, 3000)]
    rows += [f"c{n}@tally.example,cold,won" for n in range(CHUNK_ROWS)]
    rows += [f"B{n}@tally.example,hot,new" for n in range(0, 3000, 100)]
    response = await client.post(
        url, headers=headers, content="email,intent_level,follow_up_status\n" + "\n".join(rows)
    )
    body = response.json()
    assert (body["inserted"], body["updated"], body["rejected_count"]) == (CHUNK_ROWS, 3000, 30)
    await _check(sessions, sponsor)
    async with sessions() as session:
        kept = await session.scalar(
            text("SELECT intent_level FROM leads WHERE sponsor_id = :s AND email = :e"),
            {"s": sponsor, "e": "b1600@tally.example"},
        )
    assert kept == levels[1600 % 4]


async def test_two_uploads_in_one_transaction_each_find_only_their_own_duplicates(
    sponsor: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    body = b"email,name\na@two.example,A\nb@two.example,B\n"
    async with sessions.begin() as session:
        first = await import_csv(session, sponsor, io.BytesIO(body))
        second = await import_csv(session, sponsor, io.BytesIO(body))
    assert (first.inserted, first.updated, first.rejected_count) == (2, 0, 0)
    assert (second.inserted, second.updated, second.rejected_count) == (0, 2, 0)


async def test_a_large_bulk_upsert_is_staged_and_changes_only_the_fields_sent(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    url = f"/api/v1/sponsors/{sponsor}/leads/bulk"
    n = repository.COPY_MIN_ROWS + 10
    leads = [{"email": f"k{i}@example.com", "name": f"K{i}", "company": "Acme"} for i in range(n)]
    response = await client.post(url, headers=token(sponsor), json={"leads": leads})
    assert response.json() == {"inserted": n, "updated": 0, "rejected": []}
    changes: list[dict[str, Any]] = [
        {"email": f"K{i}@example.com", "company": None, "tags": ["vip"]} for i in range(n)
    ]
    changes.append({"email": "k1@example.com", "name": "again"})
    response = await client.post(url, headers=token(sponsor), json={"leads": changes})
    body = response.json()
    assert (body["inserted"], body["updated"]) == (0, n)
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(n, "duplicate_in_upload")]
    lead = (
        await client.get(
            f"/api/v1/sponsors/{sponsor}/leads",
            headers=token(sponsor),
            params={"email": "k1@example.com"},
        )
    ).json()["items"][0]
    assert (lead["name"], lead["company"], lead["tags"]) == ("K1", None, ["vip"])


async def test_an_import_probes_existing_leads_by_address_for_a_sponsor_the_statistics_do_not_know(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A new sponsor's first import, when the planner's statistics know every
    other sponsor: probing each row's address must still use the (sponsor,
    email) index, never a (sponsor, …) index with the address as a filter,
    which reads every lead the import has written so far, for every row.
    Planned against a copy of ``leads`` holding three large sponsors only (in a
    transaction rolled back), so the statistics are those of such a database."""
    async with sessions() as session:
        await session.execute(text("CREATE SCHEMA stats_probe"))
        await session.execute(
            text("CREATE TABLE stats_probe.leads (LIKE public.leads INCLUDING ALL)")
        )
        await session.execute(
            text(
                "INSERT INTO stats_probe.leads (sponsor_id, email, event_id) "
                "SELECT 'big' || g % 3, 'k' || g || '@stats.example', 'expo-' || g % 7 "
                "FROM generate_series(1, 30000) AS g"
            )
        )
        await session.execute(text("ANALYZE stats_probe.leads"))
        await session.execute(text("SET LOCAL search_path = stats_probe"))
        plan = await session.scalar(
            text(
                "EXPLAIN (FORMAT JSON) SELECT m.id FROM (VALUES ('a@stats.example')) AS i(email) "
                f"CROSS JOIN LATERAL ({repository.EXISTING_PROBE}) AS m"
            ),
            {"sponsor_id": "new-sponsor"},
        )
        await session.rollback()
    indexes = {node["Index Name"] for node in _plan_nodes(plan[0]["Plan"]) if "Index Name" in node}
    assert len(indexes) == 1 and next(iter(indexes)).endswith("sponsor_id_email_key")


async def test_a_filtered_lead_list_reads_the_sponsors_leads_even_when_they_come_last(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A sponsor whose leads all come after another's, in a table its statistics
    know: a page filtered by level must be read through a (sponsor, …) index,
    never by walking the primary key through the other sponsor's leads first.
    Planned against a copy of ``leads`` (in a transaction rolled back)."""
    async with sessions() as session:
        await session.execute(text("CREATE SCHEMA list_probe"))
        await session.execute(
            text("CREATE TABLE list_probe.leads (LIKE public.leads INCLUDING ALL)")
        )
        for sponsor, count in (("zbig", 100_000), ("alate", 20_000)):
            await session.execute(
                text(
                    "INSERT INTO list_probe.leads (sponsor_id, email, intent_level, name) "
                    "SELECT :s, 'k' || g || '@list.example', "
                    "(ARRAY['hot', 'warm', 'cold'])[g % 3 + 1], 'Lead ' || g "
                    "FROM generate_series(1, :n) AS g"
                ),
                {"s": sponsor, "n": count},
            )
        await session.execute(text("ANALYZE list_probe.leads"))
        await session.execute(text("SET LOCAL search_path = list_probe"))
        query = repository.list_query(
            "alate", limit=51, after_id=None, filters={"intent_level": "hot"}
        )
        compiled = query.compile(
            dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        plan = await session.scalar(text(f"EXPLAIN (FORMAT JSON) {compiled}"))
        await session.rollback()
    indexes = {node["Index Name"] for node in _plan_nodes(plan[0]["Plan"]) if "Index Name" in node}
    assert indexes and all("sponsor_id" in name for name in indexes)


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]
