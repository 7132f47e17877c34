"""The HTTP API: auth, input errors, drafts, pagination."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.models import Campaign, Lead, OutboxMessage
from tests import factories

# ---------------------------------------------------------------- auth


async def test_no_token_is_401(client: httpx.AsyncClient, sponsor: str) -> None:
    response = await client.get(f"/api/v1/sponsors/{sponsor}/campaigns")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_token"


async def test_a_token_for_another_sponsor_is_403(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await client.get(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token("someone-else")
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "sponsor_forbidden"


async def test_a_missing_scope_is_403(client: httpx.AsyncClient, sponsor: str, token: Any) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor, scopes="campaigns:read"),
        json=factories.campaign(),
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


async def test_an_expired_token_is_401(client: httpx.AsyncClient, sponsor: str) -> None:
    expired = jwt.encode(
        {"sub": "x", "scope": "admin", "sponsor_ids": [sponsor], "exp": int(time.time()) - 10},
        "test-secret-for-the-suite-0123456789",
        algorithm="HS256",
    )
    response = await client.get(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers={"Authorization": f"Bearer {expired}"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


async def test_a_token_signed_with_another_key_is_401(
    client: httpx.AsyncClient, sponsor: str
) -> None:
    forged = jwt.encode(
        {"sub": "x", "scope": "admin", "sponsor_ids": [sponsor], "exp": int(time.time()) + 60},
        "not-the-secret-at-all-not-the-secret",
        algorithm="HS256",
    )
    response = await client.get(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


async def test_only_admins_create_sponsors(client: httpx.AsyncClient, token: Any) -> None:
    response = await client.put(
        "/api/v1/sponsors/new-one",
        headers=token("new-one"),
        json={"name": "N", "from_email": "a@b.example"},
    )
    assert response.status_code == 403


async def test_a_sponsor_that_may_not_send_gets_messaging_disabled(
    client: httpx.AsyncClient, sponsor: str, admin: dict[str, str], token: Any
) -> None:
    await client.put(
        f"/api/v1/sponsors/{sponsor}",
        headers=admin,
        json={"name": "Muted", "from_email": "a@b.example", "can_send_messages": False},
    )
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token(sponsor), json=factories.campaign()
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "messaging_disabled"


# ---------------------------------------------------------------- bad input


async def _campaign_count(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> tuple[int, int]:
    async with sessions() as session:
        campaigns = await session.scalar(
            select(func.count()).select_from(Campaign).where(Campaign.sponsor_id == sponsor)
        )
        outbox = await session.scalar(select(func.count()).select_from(OutboxMessage))
    return int(campaigns or 0), int(outbox or 0)


async def test_a_missing_subject_is_422_naming_the_field_and_writes_nothing(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    body = factories.campaign()
    del body["subject"]
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token(sponsor), json=body
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["field"] == "subject"
    assert (await _campaign_count(sessions, sponsor))[0] == 0


async def test_an_unknown_audience_type_is_422_naming_the_field(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor),
        json=factories.campaign(audience_type="vip"),
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "audience_type"
    assert (await _campaign_count(sessions, sponsor))[0] == 0


async def test_a_template_with_an_unknown_variable_is_422(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor),
        json=factories.campaign(message_body="Hi {{ nmae }}"),
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_template_variable"
    assert error["field"] == "message_body"
    assert "nmae" in error["message"]


async def test_a_template_syntax_error_is_422_with_the_line(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor),
        json=factories.campaign(message_body="Hi\n{{ name "),
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "template_syntax_error"
    assert "line 2" in response.json()["error"]["message"]


async def test_a_subject_with_a_line_break_is_rejected(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor),
        json=factories.campaign(subject="Hi\r\nBcc: victim@example.com"),
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "subject"


async def test_an_invalid_email_in_a_bulk_upsert_rejects_only_that_row(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rows = [
        {"email": "good@example.com"},
        {"email": "not-an-address"},
        {"email": "Also.Good@Example.com"},
    ]
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/leads/bulk", headers=token(sponsor), json={"leads": rows}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["inserted"] == 2
    assert body["rejected"] == [
        {
            "index": 1,
            "code": "invalid_email",
            "field": "email",
            "message": body["rejected"][0]["message"],
        }
    ]
    async with sessions() as session:
        emails = set(
            (await session.scalars(select(Lead.email).where(Lead.sponsor_id == sponsor))).all()
        )
    assert emails == {"good@example.com", "also.good@example.com"}


async def test_duplicates_inside_one_upload_are_reported(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    rows = [{"email": "a@example.com"}, {"email": "A@example.com"}]
    body = (
        await client.post(
            f"/api/v1/sponsors/{sponsor}/leads/bulk", headers=token(sponsor), json={"leads": rows}
        )
    ).json()
    assert body["inserted"] == 1
    assert body["rejected"][0]["index"] == 1
    assert body["rejected"][0]["code"] == "duplicate_in_upload"


async def test_an_upsert_updates_only_the_fields_sent(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    url = f"/api/v1/sponsors/{sponsor}/leads/bulk"
    await client.post(
        url,
        headers=token(sponsor),
        json={"leads": [{"email": "x@example.com", "name": "X", "company": "C"}]},
    )
    body = (
        await client.post(
            url,
            headers=token(sponsor),
            json={"leads": [{"email": "x@example.com", "company": "D"}]},
        )
    ).json()
    assert (body["inserted"], body["updated"]) == (0, 1)
    async with sessions() as session:
        lead = await session.scalar(select(Lead).where(Lead.sponsor_id == sponsor))
    assert lead is not None
    assert (lead.name, lead.company, lead.follow_up_status) == ("X", "D", "new")


async def test_a_row_with_a_bad_field_names_it(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    rows = [{"email": "a@example.com", "intent_level": "lukewarm"}]
    body = (
        await client.post(
            f"/api/v1/sponsors/{sponsor}/leads/bulk", headers=token(sponsor), json={"leads": rows}
        )
    ).json()
    assert body["inserted"] == 0
    assert body["rejected"][0]["field"] == "intent_level"


# Path parameters other than the sponsor, filled in so that each route would find nothing.
_PATH_VALUES = {
    "campaign_id": "00000000-0000-4000-8000-000000000000",
    "template_id": "00000000-0000-4000-8000-000000000000",
    "lead_id": "1",
    "version": "1",
    "email": "a@example.com",
    "type_id": "00000000-0000-4000-8000-000000000000",
    "message_id": "00000000-0000-4000-8000-000000000000",
    "rule_id": "00000000-0000-4000-8000-000000000000",
    "subscription_id": "00000000-0000-4000-8000-000000000000",
}


def _sponsor_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every documented route under a sponsor, except the one that
    creates it."""
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if "{sponsor_id}" in path
        for method in operations
        if (method, path) != ("put", "/api/v1/sponsors/{sponsor_id}")
    ]


async def test_every_route_of_an_unknown_sponsor_is_the_same_404(
    client: httpx.AsyncClient, app: FastAPI, admin: dict[str, str]
) -> None:
    routes = _sponsor_routes(app)
    assert len(routes) > 30
    for method, path in routes:
        url = path.format(sponsor_id="nobody-here", **_PATH_VALUES)
        if path.endswith("/import"):
            csv_headers = {**admin, "Content-Type": "text/csv"}
            response = await client.request(method, url, content=b"email\n", headers=csv_headers)
        elif method in ("POST", "PATCH"):
            response = await client.request(method, url, json={}, headers=admin)
        else:
            response = await client.request(method, url, headers=admin)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "sponsor_not_found", (method, path)


async def test_a_token_for_another_sponsor_is_403_on_every_route_before_any_lookup(
    client: httpx.AsyncClient, app: FastAPI, sponsor: str, token: Any
) -> None:
    for method, path in _sponsor_routes(app):
        url = path.format(sponsor_id=sponsor, **_PATH_VALUES)
        response = await client.request(method, url, headers=token("someone-else"))
        assert response.status_code == 403, (method, path, response.text)


async def test_a_tampered_cursor_is_400(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    response = await client.get(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token(sponsor), params={"cursor": "!!nope"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "cursor"


# ---------------------------------------------------------------- drafts and lists


async def test_a_draft_can_be_sent_later_and_then_not_deleted(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    draft = await factories.draft(client, sponsor, headers)
    assert draft["status"] == "draft"
    sent = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}/send", headers=headers
    )
    assert sent.status_code == 202
    assert sent.json()["status"] == "queued"
    again = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}/send", headers=headers
    )
    assert again.status_code == 409
    delete = await client.delete(
        f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}", headers=headers
    )
    assert delete.status_code == 409


async def test_a_draft_can_be_deleted(client: httpx.AsyncClient, sponsor: str, token: Any) -> None:
    headers = token(sponsor)
    draft = await factories.draft(client, sponsor, headers)
    assert (
        await client.delete(f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}", headers=headers)
    ).status_code == 204
    assert (
        await client.get(f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}", headers=headers)
    ).status_code == 404


async def test_another_sponsors_campaign_is_404(
    client: httpx.AsyncClient, sponsor: str, token: Any, admin: dict[str, str]
) -> None:
    draft = await factories.draft(client, sponsor, token(sponsor))
    await client.put(
        "/api/v1/sponsors/intruder", headers=admin, json={"name": "I", "from_email": "i@i.example"}
    )
    campaign = f"/api/v1/sponsors/intruder/campaigns/{draft['id']}"
    headers = token("intruder")
    for method, url, body in (
        ("GET", campaign, None),
        ("GET", f"{campaign}/preview", None),
        ("GET", f"{campaign}/deliveries", None),
        ("GET", f"{campaign}/stats", None),
        ("POST", f"{campaign}/test", {"emails": ["i@i.example"]}),
        ("POST", f"{campaign}/send", None),
        ("POST", f"{campaign}/pause", None),
        ("DELETE", campaign, None),
    ):
        response = await client.request(method, url, headers=headers, json=body)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["error"]["code"] == "campaign_not_found", (method, url)


async def test_campaigns_list_pages_newest_first(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    headers = token(sponsor)
    ids = []
    for i in range(5):
        body = factories.campaign(name=f"c{i}", draft=True)
        ids.append(
            (
                await client.post(
                    f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=body
                )
            ).json()["id"]
        )
    first = (
        await client.get(
            f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, params={"limit": 3}
        )
    ).json()
    second = (
        await client.get(
            f"/api/v1/sponsors/{sponsor}/campaigns",
            headers=headers,
            params={"limit": 3, "cursor": first["next_cursor"]},
        )
    ).json()
    assert [c["id"] for c in first["items"] + second["items"]] == list(reversed(ids))
    assert second["next_cursor"] is None
    filtered = (
        await client.get(
            f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, params={"status": "sent"}
        )
    ).json()
    assert filtered["items"] == []


@pytest.mark.parametrize(
    ("audience", "expected"),
    [("all", 6), ("hot", 2), ("warm", 2), ("cold", 2), ("new", 3), ("contacted", 3)],
)
async def test_total_recipients_follow_the_audience_preset(
    client: httpx.AsyncClient, sponsor: str, token: Any, audience: str, expected: int
) -> None:
    headers = token(sponsor)
    rows = factories.leads(6, domain=f"{sponsor}.example")
    for i, row in enumerate(rows):
        row["follow_up_status"] = "new" if i < 3 else "contacted"
    await factories.add_leads(client, sponsor, headers, rows)
    body = factories.campaign(audience_type=audience, draft=True)
    created = (
        await client.post(f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=body)
    ).json()
    assert created["total_recipients"] == expected


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}


async def test_two_concurrent_sends_of_one_draft_answer_one_202_and_one_409(
    client: httpx.AsyncClient, sponsor: str, token: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    headers = token(sponsor)
    draft = await factories.draft(client, sponsor, headers)
    url = f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}/send"

    answers = await asyncio.gather(*(client.post(url, headers=headers) for _ in range(2)))

    assert sorted(a.status_code for a in answers) == [202, 409]
    refused = next(a for a in answers if a.status_code == 409).json()["error"]
    assert refused["code"] == "invalid_transition"
    assert "queued" in refused["message"]
    async with sessions() as session:
        queued = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.key == draft["id"])
        )
    assert queued == 0  # the event was published, then deleted, after the commit
