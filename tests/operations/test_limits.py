"""Abuse and input limits: per-sponsor rate limits shared by replicas, body size, depth, lengths."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.settings import Settings
from tests import factories

LimitedClients = list[httpx.AsyncClient]


async def _clients(apps: list[FastAPI]) -> AsyncIterator[LimitedClients]:
    async with AsyncExitStack() as stack:
        clients = []
        for application in apps:
            await stack.enter_async_context(application.router.lifespan_context(application))
            transport = httpx.ASGITransport(app=application)
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://test")
                )
            )
        yield clients


@pytest.fixture(scope="module")
async def replicas(migrated: Settings) -> AsyncIterator[LimitedClients]:
    """Two API instances (two replicas) on the one database, with small limits."""
    limited = migrated.model_copy(
        update={
            "api_rate_limits_enabled": True,
            "api_rate_create_per_minute": 2,
            "api_rate_read_per_minute": 3,
            "api_max_body_mb": 0.01,  # 10 KiB
            "api_max_json_depth": 6,
        }
    )
    async for clients in _clients([create_app(limited), create_app(limited)]):
        yield clients


async def _same_minute() -> None:
    """Counters are per clock minute: don't start a counting test just before it turns."""
    second = datetime.now(UTC).second
    if second >= 55:
        await asyncio.sleep(61 - second)


async def test_reads_past_the_limit_are_429_with_retry_after_across_replicas(
    replicas: LimitedClients, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    await _same_minute()
    headers = token(sponsor)
    url = f"/api/v1/sponsors/{sponsor}/campaigns"
    answers = [
        await replicas[i % 2].get(url, headers=headers)  # alternate between the replicas
        for i in range(4)
    ]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    limited = answers[3]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


async def test_campaign_creation_has_its_own_lower_limit(
    replicas: LimitedClients, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    await _same_minute()
    headers = token(sponsor)
    url = f"/api/v1/sponsors/{sponsor}/campaigns"
    statuses = [
        (
            await replicas[i % 2].post(url, headers=headers, json=factories.campaign(draft=True))
        ).status_code
        for i in range(3)
    ]
    assert statuses == [202, 202, 429]
    # Reads are counted apart: still allowed.
    assert (await replicas[0].get(url, headers=headers)).status_code == 200


async def test_one_sponsor_spending_its_quota_leaves_others_alone(
    replicas: LimitedClients, sponsor: str, token: Callable[..., dict[str, str]], admin: Any
) -> None:
    await _same_minute()
    url = f"/api/v1/sponsors/{sponsor}/campaigns"
    for _ in range(4):
        await replicas[0].get(url, headers=token(sponsor))
    assert (await replicas[0].get(url, headers=token(sponsor))).status_code == 429
    other = f"sp-{uuid.uuid4().hex[:10]}"
    created = await replicas[1].put(
        f"/api/v1/sponsors/{other}",
        headers=admin,
        json={"name": "Other", "from_email": "o@other.example"},
    )
    assert created.status_code == 201
    assert (
        await replicas[1].get(f"/api/v1/sponsors/{other}/campaigns", headers=token(other))
    ).status_code == 200


async def test_a_stranger_cannot_spend_a_sponsors_quota(
    replicas: LimitedClients, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    await _same_minute()
    url = f"/api/v1/sponsors/{sponsor}/campaigns"
    for _ in range(5):
        assert (await replicas[0].get(url, headers=token("someone-else"))).status_code == 403
        assert (await replicas[0].get(url)).status_code == 401
    assert (await replicas[1].get(url, headers=token(sponsor))).status_code == 200


async def test_the_counters_are_unlogged_and_expire_with_their_minute(
    replicas: LimitedClients,
    sponsor: str,
    token: Callable[..., dict[str, str]],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A count per request must not wait for a WAL flush; only the current minute is kept."""
    await _same_minute()
    url = f"/api/v1/sponsors/{sponsor}/campaigns"
    assert (await replicas[0].get(url, headers=token(sponsor))).status_code == 200
    async with sessions.begin() as session:
        persistence = await session.scalar(
            text("SELECT relpersistence::text FROM pg_class WHERE relname = 'api_rate_counters'")
        )
        assert persistence == "u"
        # A window of a minute ago, then a request that opens the window of this minute.
        await session.execute(
            text(
                "UPDATE api_rate_counters SET window_start = window_start - interval '1 minute' "
                "WHERE sponsor_id = :s"
            ),
            {"s": sponsor},
        )
    await _same_minute()
    assert (await replicas[0].get(url, headers=token(sponsor))).status_code == 200
    async with sessions() as session:
        hits = (
            (
                await session.execute(
                    text("SELECT hits FROM api_rate_counters WHERE sponsor_id = :s"), {"s": sponsor}
                )
            )
            .scalars()
            .all()
        )
    assert hits == [1]


async def test_a_body_over_the_limit_is_413(
    replicas: LimitedClients, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    body = factories.campaign(message_body="x" * 20_000)
    response = await replicas[0].post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token(sponsor), json=body
    )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "payload_too_large",
        "message": "the body is larger than 0.01 MB",
        "field": "body",
    }


async def test_a_chunked_body_without_length_is_cut_at_the_limit(
    replicas: LimitedClients, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 1024

    response = await replicas[0].post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers={**token(sponsor), "content-type": "application/json"},
        content=chunks(),
    )
    assert response.status_code == 413


async def test_a_csv_import_streams_past_the_json_body_limit(
    replicas: LimitedClients, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    """CSV imports have their own bound (LEADS_IMPORT_MAX_BYTES), not API_MAX_BODY_MB."""
    rows = "".join(f"csv{i}@{sponsor}.example,Lead {i}\n" for i in range(1000))
    response = await replicas[0].post(
        f"/api/v1/sponsors/{sponsor}/leads/import",
        headers={**token(sponsor, scopes="leads:write"), "content-type": "text/csv"},
        content=f"email,name\n{rows}",
    )
    assert len(rows) > 0.01 * 1_048_576
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 1000


async def test_json_nested_too_deep_is_422_naming_the_path(
    replicas: LimitedClients, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    deep: Any = "leaf"
    for _ in range(10):
        deep = {"a": deep}
    response = await replicas[0].post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers={**token(sponsor), "content-type": "application/json"},
        content=orjson.dumps(factories.campaign(metadata=deep)),
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "json_too_deep"
    assert error["field"] == "metadata.a.a.a.a.a"


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain"])
async def test_json_deeper_than_any_parser_allows_is_422_not_500(
    replicas: LimitedClients,
    sponsor: str,
    token: Callable[..., dict[str, str]],
    content_type: str | None,
) -> None:
    headers = token(sponsor) | ({"content-type": content_type} if content_type else {})
    response = await replicas[0].post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=headers,
        content=b"[" * 5000 + b"]" * 5000,
    )
    assert 400 <= response.status_code < 500
    if content_type != "text/plain":  # not read as JSON at all
        assert response.json()["error"]["code"] == "json_too_deep"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"name": "n" * 201}, "name"),
        ({"subject": "s" * 999}, "subject"),
        ({"event_id": "e" * 65}, "event_id"),
        ({"draft": True, "send_at": "0001-01-01T00:00:00Z"}, "send_at"),
        ({"metadata": {"k" * 101: 1}}, "metadata."),
        ({"metadata": {"big": "v" * 17_000}}, "metadata"),
    ],
)
async def test_a_string_over_its_max_length_is_422_naming_the_field(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Callable[..., dict[str, str]],
    override: dict[str, Any],
    field: str,
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor),
        json=factories.campaign(**override),
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith(field)


async def test_nan_in_free_form_json_is_422_not_500(
    client: httpx.AsyncClient, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    body = orjson.dumps(factories.campaign(metadata={"n": 0})).replace(b'"n":0', b'"n":NaN')
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers={**token(sponsor), "content-type": "application/json"},
        content=body,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "metadata.n"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (factories.campaign(name="a\x00b"), "name"),
        (factories.campaign(metadata={"k\x00": 1}), "metadata.k\x00"),
        (factories.campaign(metadata={"list": ["ok", "no\x00"]}), "metadata.list.1"),
    ],
)
async def test_a_nul_character_is_422_naming_the_field(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Callable[..., dict[str, str]],
    body: dict[str, Any],
    field: str,
) -> None:
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=token(sponsor), json=body
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == {
        "code": "nul_character",
        "message": "U+0000 is not allowed",
        "field": field,
    }


async def test_a_nul_character_in_the_path_or_query_is_422(
    client: httpx.AsyncClient, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    for url in (
        f"/api/v1/sponsors/{sponsor}%00/campaigns",
        f"/api/v1/sponsors/{sponsor}/campaigns?cursor=a%00",
    ):
        response = await client.get(url, headers=token(sponsor))
        assert response.status_code == 422, url
        assert response.json()["error"]["code"] == "nul_character"


async def test_an_hourly_cap_beyond_any_real_one_is_422_not_500(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.put(
        f"/api/v1/sponsors/sp-{uuid.uuid4().hex[:10]}",
        headers=admin,
        json={"name": "N", "from_email": "a@b.example", "hourly_send_cap": 2**40},
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "hourly_send_cap"


async def test_a_lead_tag_over_its_max_length_rejects_that_row_naming_the_field(
    client: httpx.AsyncClient, sponsor: str, token: Callable[..., dict[str, str]]
) -> None:
    rows = factories.leads(2)
    rows[1]["tags"] = ["t" * 101]
    result = await factories.add_leads(client, sponsor, token(sponsor), rows)
    assert result["inserted"] == 1
    assert [(r["index"], r["field"]) for r in result["rejected"]] == [(1, "tags.0")]


def test_every_request_body_and_query_string_has_a_max_length(app: FastAPI) -> None:
    spec = app.openapi()
    unbounded: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            bounded = {"maxLength", "enum", "format", "pattern", "const"}
            if node.get("type") == "string" and not bounded & node.keys():
                unbounded.append(path)
            for key, child in node.items():
                visit(child, f"{path}.{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                visit(child, f"{path}[{index}]")

    for name, schema in spec["components"]["schemas"].items():
        if name.endswith("In"):
            visit(schema, name)
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            # Path segments are bounded by the server's request-line limit.
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    continue
                visit(parameter.get("schema", {}), f"{method} {path} {parameter['name']}")
    assert not unbounded, unbounded
