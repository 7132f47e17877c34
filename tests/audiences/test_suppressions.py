"""Suppressions: per-sponsor and global lists, CSV export, and planning that skips
and counts suppressed addresses."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests import factories
from tests.conftest import eventually


def _url(sponsor: str) -> str:
    return f"/api/v1/sponsors/{sponsor}/suppressions"


async def test_an_address_is_suppressed_listed_and_removed(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    body = {"email": " Ada@Example.com ", "reason": "complaint", "source": "support ticket 12"}
    first = await client.post(_url(sponsor), headers=headers, json=body)
    assert first.status_code == 201, first.text
    assert first.json()["email"] == "ada@example.com"
    assert first.json()["reason"] == "complaint"
    again = await client.post(_url(sponsor), headers=headers, json=body)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]

    page = (await client.get(_url(sponsor), headers=headers)).json()
    assert [item["email"] for item in page["items"]] == ["ada@example.com"]

    removed = await client.delete(f"{_url(sponsor)}/ADA@example.com", headers=headers)
    assert removed.status_code == 204
    assert (await client.get(_url(sponsor), headers=headers)).json()["items"] == []
    missing = await client.delete(f"{_url(sponsor)}/ada@example.com", headers=headers)
    assert missing.status_code == 404


async def test_a_bad_address_or_reason_is_refused(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    bad_email = await client.post(_url(sponsor), headers=headers, json={"email": "nope"})
    assert bad_email.status_code == 400
    assert bad_email.json()["error"]["field"] == "email"
    bad_reason = await client.post(
        _url(sponsor), headers=headers, json={"email": "a@example.com", "reason": "spite"}
    )
    assert bad_reason.status_code == 422


async def test_suppressions_page_with_a_cursor(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    for i in range(5):
        await client.post(_url(sponsor), headers=headers, json={"email": f"s{i}@example.com"})
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(_url(sponsor), headers=headers, params=params)).json()
        seen += [item["email"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"s{i}@example.com" for i in range(5)]


async def test_suppressions_export_as_csv(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    await client.post(
        _url(sponsor),
        headers=headers,
        json={"email": "b@example.com", "reason": "hard_bounce", "source": "resend, webhook"},
    )
    for request in (
        {"params": {"format": "csv"}, "headers": headers},
        {"headers": {**headers, "Accept": "text/csv"}},
    ):
        response = await client.get(_url(sponsor), **request)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["email"], r["reason"], r["source"], r["scope"]) for r in rows] == [
            ("b@example.com", "hard_bounce", "resend, webhook", "sponsor")
        ]


async def test_suppressions_export_neutralises_formulas_in_addresses_and_sources(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    cases = {
        "=cmd@example.com": '=HYPERLINK("https://evil.example","open me")',
        "+one@example.com": "+1+1",
        "-two@example.com": "-2+3",
        "three@example.com": "@SUM(A1:A2)",
    }
    for email, source in cases.items():
        added = await client.post(
            _url(sponsor), headers=headers, json={"email": email, "source": source}
        )
        assert added.status_code == 201, added.text
    response = await client.get(_url(sponsor), headers=headers, params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    quoted = {
        (email if email[0].isalnum() else "'" + email): "'" + source
        for email, source in cases.items()
    }
    assert {r["email"]: r["source"] for r in rows} == quoted


async def test_sponsors_cannot_see_each_others_suppressions(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    await client.post(_url(sponsor), headers=token(sponsor), json={"email": "c@example.com"})
    response = await client.get(_url(sponsor), headers=token("someone-else"))
    assert response.status_code == 403


async def test_global_suppressions_are_for_admins(
    client: httpx.AsyncClient, sponsor: str, token: Any, admin: dict[str, str]
) -> None:
    email = f"global-{uuid.uuid4().hex[:8]}@example.com"
    forbidden = await client.post(
        "/api/v1/suppressions", headers=token(sponsor), json={"email": email}
    )
    assert forbidden.status_code == 403
    created = await client.post("/api/v1/suppressions", headers=admin, json={"email": email})
    assert created.status_code == 201
    assert created.json()["sponsor_id"] is None
    exported = await client.get("/api/v1/suppressions", headers=admin, params={"format": "csv"})
    assert f"{email},manual,," in exported.text
    removed = await client.delete(f"/api/v1/suppressions/{email}", headers=admin)
    assert removed.status_code == 204


async def test_the_planner_skips_and_counts_suppressed_addresses(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    admin: dict[str, str],
    workers: None,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    headers = token(sponsor)
    domain = f"{uuid.uuid4().hex[:8]}.example"
    await factories.add_leads(client, sponsor, headers, factories.leads(10, domain=domain))
    await client.post(_url(sponsor), headers=headers, json={"email": f"lead1@{domain}"})
    await client.post(_url(sponsor), headers=headers, json={"email": f"lead2@{domain}"})
    await client.post("/api/v1/suppressions", headers=admin, json={"email": f"lead3@{domain}"})
    # Another sponsor's suppression does not apply here.
    other = f"{sponsor}-x"
    await client.put(
        f"/api/v1/sponsors/{other}", headers=admin, json={"name": "X", "from_email": "x@x.example"}
    )
    await client.post(_url(other), headers=token(other), json={"email": f"lead4@{domain}"})

    preview = await client.post(
        f"/api/v1/sponsors/{sponsor}/audiences/preview",
        headers=headers,
        json={"audience_type": "all"},
    )
    assert preview.json()["count"] == 7
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=factories.campaign()
    )
    assert response.status_code == 202, response.text
    campaign_id = response.json()["id"]

    async def stats() -> dict[str, Any] | None:
        reply = await client.get(
            f"/api/v1/sponsors/{sponsor}/campaigns/{campaign_id}/stats", headers=headers
        )
        body: dict[str, Any] = reply.json()
        return body if body["status"] in ("sending", "sent") else None

    body = await eventually(stats)
    assert body["total_recipients"] == 7
    assert body["suppressed"] == 3
    async with sessions() as session:
        recipients = set(
            (
                await session.scalars(
                    text("SELECT recipient_email FROM campaign_deliveries WHERE campaign_id = :c"),
                    {"c": campaign_id},
                )
            ).all()
        )
    assert recipients == {f"lead{i}@{domain}" for i in (0, 4, 5, 6, 7, 8, 9)}


async def test_a_deadlock_answers_409_and_keeps_nothing(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Suppressing an address locks its lead: a transaction that holds the lead
    and then suppresses the same address deadlocks with the request. PostgreSQL
    rolls the request back; the caller hears a retryable 409, not a 500."""
    domain = f"deadlock-{uuid.uuid4().hex[:8]}.example"
    address = f"lead0@{domain}"
    await factories.add_leads(client, sponsor, token(sponsor), factories.leads(1, domain=domain))
    async with sessions() as other:
        # This side outwaits the request, so the request is the one rolled back.
        await other.execute(text("SET LOCAL deadlock_timeout = '30s'"))
        await other.execute(
            text("UPDATE leads SET title = 'held' WHERE sponsor_id = :s AND email = :e"),
            {"s": sponsor, "e": address},
        )
        request = asyncio.create_task(
            client.post(_url(sponsor), headers=token(sponsor), json={"email": address})
        )
        await eventually(lambda: _someone_waits(sessions))
        await other.execute(
            text("INSERT INTO suppressions (sponsor_id, email, reason) VALUES (:s, :e, 'manual')"),
            {"s": sponsor, "e": address},
        )
        answer = await request
        await other.rollback()
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "write_conflict"
    assert answer.headers["retry-after"] == "1"
    listed = await client.get(_url(sponsor), headers=token(sponsor))
    assert listed.json()["items"] == []
    assert (
        await client.post(_url(sponsor), headers=token(sponsor), json={"email": address})
    ).status_code == 201


async def _someone_waits(sessions: async_sessionmaker[AsyncSession]) -> bool:
    async with sessions() as session:
        return bool(await session.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")))
