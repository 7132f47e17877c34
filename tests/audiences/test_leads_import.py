"""CSV import of leads, and the lead routes: list, get, delete."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.leads.csv_import import CHUNK_ROWS
from service.settings import Settings
from tests import factories


async def _import(
    client: httpx.AsyncClient, sponsor: str, headers: dict[str, str], body: bytes | str
) -> httpx.Response:
    return await client.post(
        f"/api/v1/sponsors/{sponsor}/leads/import",
        headers={**headers, "Content-Type": "text/csv"},
        content=body.encode() if isinstance(body, str) else body,
    )


async def _lead(
    client: httpx.AsyncClient, sponsor: str, headers: dict[str, str], email: str
) -> Any:
    response = await client.get(
        f"/api/v1/sponsors/{sponsor}/leads", headers=headers, params={"email": email}
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    return items[0] if items else None


async def test_a_csv_file_is_imported_with_fields_tags_and_attributes(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    csv = (
        "email,name,company,intent_level,intent_score,tags,booth\r\n"
        'ada@example.com,Ada Lovelace,"Analytical Engines, Ltd",hot,90,vip;enterprise,A1\r\n'
        "bob@example.com,Bob,,cold,,,\r\n"
    )
    response = await _import(client, sponsor, headers, csv)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "rows": 2,
        "inserted": 2,
        "updated": 0,
        "rejected_count": 0,
        "rejected": [],
    }
    ada = await _lead(client, sponsor, headers, "ada@example.com")
    assert ada["company"] == "Analytical Engines, Ltd"
    assert ada["intent_score"] == 90
    assert ada["tags"] == ["vip", "enterprise"]
    assert ada["attributes"] == {"booth": "A1"}
    bob = await _lead(client, sponsor, headers, "bob@example.com")
    assert bob["company"] is None and bob["attributes"] == {}


async def test_quotes_commas_backslashes_and_line_breaks_come_through_unchanged(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    name, company = 'O"Brien, \\N', "a\n\\.\nb"
    tags = ['q"uote', "back\\slash", "{brace}", "com,ma", "NULL"]
    note = 'say "hi",\nthen \\. leave'
    rows = [["email", "name", "company", "tags", "note"], ["q@example.com", name, company]]
    rows[1] += [";".join(tags), note]
    body = io.StringIO()
    csv.writer(body).writerows(rows)
    response = await _import(client, sponsor, headers, body.getvalue())
    assert response.json()["inserted"] == 1, response.text
    lead = await _lead(client, sponsor, headers, "q@example.com")
    assert (lead["name"], lead["company"], lead["tags"]) == (name, company, tags)
    assert lead["attributes"] == {"note": note}


async def test_a_bom_and_mixed_case_headers_are_understood(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    csv = "\ufeffEmail, Name \nCarol@Example.COM,Carol\n"
    response = await _import(client, sponsor, headers, csv.encode("utf-8"))
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 1
    carol = await _lead(client, sponsor, headers, "carol@example.com")
    assert carol["name"] == "Carol"


async def test_malformed_and_invalid_rows_are_reported_by_line(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    csv = (
        "email,name,intent_score\n"  # line 1
        "ok1@example.com,One,10\n"  # 2
        "too,many,fields,here\n"  # 3
        "not-an-address,Two,5\n"  # 4
        '"multi@example.com","Line\nBreak",7\n'  # 5-6: one record over two lines
        "ok2@example.com,Three,200\n"  # 7: score out of range
        "\n"  # 8: blank, skipped
        'bad@example.com,"unclosed"x,1\n'  # 9
        "OK1@example.com,Dup,1\n"  # 10: same address as line 2
        "ok3@example.com,Four,1\n"  # 11
    )
    response = await _import(client, sponsor, headers, csv)
    assert response.status_code == 200, response.text
    body = response.json()
    rejected = {row["line"]: row["code"] for row in body["rejected"]}
    assert rejected == {
        3: "malformed_row",
        4: "invalid_email",
        7: "invalid_field",
        9: "malformed_row",
        10: "duplicate_in_upload",
    }
    duplicate = next(row for row in body["rejected"] if row["line"] == 10)
    assert duplicate["message"] == "same address as line 2"
    assert body["inserted"] == 3  # ok1, multi, ok3
    assert body["rejected_count"] == 5
    multi = await _lead(client, sponsor, headers, "multi@example.com")
    assert multi["name"] == "Line\nBreak"


async def test_duplicates_across_chunks_are_reported(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    n = CHUNK_ROWS + 1000
    rows = [f"u{i}@example.com" for i in range(n)]
    # Line 3 is u1, line n + 1 is u{n - 1}: one duplicate in the first chunk's
    # place of the file, two in the second chunk (one of each chunk's address).
    rows[10] = "U1@example.com"
    rows += ["u1@example.com", f"u{n - 1}@example.com"]
    response = await _import(client, sponsor, headers, "email\n" + "\n".join(rows) + "\n")
    body = response.json()
    assert body["inserted"] == n - 1
    assert [(r["line"], r["message"]) for r in body["rejected"]] == [
        (12, "same address as line 3"),
        (n + 2, "same address as line 3"),
        (n + 3, f"same address as line {n + 1}"),
    ]


async def test_a_second_import_updates_only_the_cells_sent(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    await _import(client, sponsor, headers, "email,name,company\nd@example.com,Dee,Acme\n")
    response = await _import(
        client, sponsor, headers, "email,name,company\nd@example.com,,Globex\n"
    )
    assert (response.json()["inserted"], response.json()["updated"]) == (0, 1)
    lead = await _lead(client, sponsor, headers, "d@example.com")
    assert (lead["name"], lead["company"]) == ("Dee", "Globex")


async def test_a_stored_lead_sent_in_two_chunks_is_updated_by_the_first_row_only(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    await _import(client, sponsor, headers, "email,name\nold@example.com,Old\n")
    filler = [f"f{i}@example.com,F" for i in range(CHUNK_ROWS)]
    rows = ["old@example.com,First", *filler, "OLD@example.com,Second"]
    response = await _import(client, sponsor, headers, "email,name\n" + "\n".join(rows) + "\n")
    body = response.json()
    assert (body["inserted"], body["updated"]) == (CHUNK_ROWS, 1)
    assert [(r["line"], r["message"]) for r in body["rejected"]] == [
        (CHUNK_ROWS + 3, "same address as line 2")
    ]
    assert (await _lead(client, sponsor, headers, "old@example.com"))["name"] == "First"


async def test_a_file_without_an_email_column_is_a_422(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await _import(client, sponsor, token(sponsor), "name\nAda\n")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_header"


async def test_a_file_that_is_not_utf8_is_a_422(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await _import(
        client, sponsor, token(sponsor), "email,name\nx@example.com,J\xf6rg\n".encode("latin-1")
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_encoding"


async def test_import_needs_text_csv(client: httpx.AsyncClient, sponsor: str, token: Any) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/leads/import",
        headers={**token(sponsor), "Content-Type": "application/json"},
        content=b"{}",
    )
    assert response.status_code == 415


async def test_import_needs_the_leads_write_scope(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await _import(client, sponsor, token(sponsor, scopes="campaigns:read"), "email\n")
    assert response.status_code == 403


async def test_leads_are_listed_with_filters_and_a_cursor(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    await factories.add_leads(client, sponsor, headers, factories.leads(9))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "intent_level": "hot"}
        if cursor:
            params["cursor"] = cursor
        page = (
            await client.get(f"/api/v1/sponsors/{sponsor}/leads", headers=headers, params=params)
        ).json()
        seen += [lead["email"] for lead in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["lead0@example.com", "lead3@example.com", "lead6@example.com"]
    bad = await client.get(
        f"/api/v1/sponsors/{sponsor}/leads", headers=headers, params={"cursor": "zz"}
    )
    assert bad.status_code == 400


async def test_a_lead_of_another_sponsor_is_not_found(
    client: httpx.AsyncClient, sponsor: str, token: Any, admin: dict[str, str]
) -> None:
    headers = token(sponsor)
    await factories.add_leads(client, sponsor, headers, factories.leads(1))
    lead = await _lead(client, sponsor, headers, "lead0@example.com")
    assert (
        await client.get(f"/api/v1/sponsors/{sponsor}/leads/{lead['id']}", headers=headers)
    ).status_code == 200
    other = f"{sponsor}-other"
    await client.put(
        f"/api/v1/sponsors/{other}", headers=admin, json={"name": "O", "from_email": "o@o.example"}
    )
    response = await client.get(
        f"/api/v1/sponsors/{other}/leads/{lead['id']}", headers=token(other)
    )
    assert response.status_code == 404


async def test_deleting_a_lead_cancels_its_pending_sends_and_keeps_history(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = token(sponsor)
    await factories.add_leads(client, sponsor, headers, factories.leads(3))
    created = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=headers,
        json=factories.campaign(draft=True),
    )
    campaign_id = created.json()["id"]
    lead = await _lead(client, sponsor, headers, "lead1@example.com")
    async with sessions.begin() as session:
        # What the planner would have written: one pending row, counted.
        await session.execute(
            text(
                "INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no) "
                "VALUES (:c, :l, 'lead1@example.com', 0)"
            ),
            {"c": campaign_id, "l": lead["id"]},
        )
        await session.execute(
            text("INSERT INTO campaign_stats (campaign_id, shard, pending) VALUES (:c, 0, 1)"),
            {"c": campaign_id},
        )
    response = await client.delete(
        f"/api/v1/sponsors/{sponsor}/leads/{lead['id']}", headers=headers
    )
    assert response.status_code == 204
    assert await _lead(client, sponsor, headers, "lead1@example.com") is None
    async with sessions() as session:
        status = await session.scalar(
            text("SELECT status FROM campaign_deliveries WHERE campaign_id = :c"),
            {"c": campaign_id},
        )
        counters = (
            await session.execute(
                text(
                    "SELECT sum(pending), sum(cancelled) FROM campaign_stats WHERE campaign_id = :c"
                ),
                {"c": campaign_id},
            )
        ).one()
    assert status == "cancelled"
    assert tuple(counters) == (0, 1)
    preview = await client.post(
        f"/api/v1/sponsors/{sponsor}/audiences/preview",
        headers=headers,
        json={"audience_type": "all"},
    )
    assert preview.json()["count"] == 2
    again = await client.delete(f"/api/v1/sponsors/{sponsor}/leads/{lead['id']}", headers=headers)
    assert again.status_code == 404


def test_campaignctl_import_leads_reads_a_file(
    migrated: Settings, sponsor: str, tmp_path: Path
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("email,name\ncli1@example.com,One\ncli2@example.com,Two\nnope,Three\n")
    env = {"DATABASE_URL": migrated.database_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "import-leads", str(path), "--sponsor", sponsor],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "3 rows: 2 inserted, 0 updated, 1 rejected" in result.stdout
    assert "line 4: invalid_email" in result.stdout


async def test_a_nul_character_rejects_only_its_row(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/leads/bulk",
        headers=token(sponsor),
        json={
            "leads": [{"email": "n@example.com", "name": "a\u0000b"}, {"email": "m@example.com"}]
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 1
    assert [row["index"] for row in response.json()["rejected"]] == [0]
