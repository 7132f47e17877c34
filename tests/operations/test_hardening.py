"""Bad input is refused cheaply and never answers 500: request bodies and JSON."""

from __future__ import annotations

import gc
import select
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import orjson
import psutil
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Message

from service.app import create_app
from service.auth import mint_token
from service.settings import Settings
from tests import factories
from tests.conftest import served

Headers = Callable[..., dict[str, str]]


@pytest.fixture(scope="module")
async def limited(migrated: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An API with a 10 KiB body limit and a 20 KiB CSV import limit."""
    settings = migrated.model_copy(
        update={
            "api_rate_limits_enabled": False,
            "api_max_body_mb": 0.01,
            "leads_import_max_bytes": 20_480,
        }
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def _chunks(total: int, size: int = 1024) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield b" " * size


# ------------------------------------------------------------------ bodies bounded before reading


@pytest.mark.parametrize(
    "content_type",
    [None, "text/csv", "TEXT/CSV", "Application/JSON", "application/octet-stream", "text/plain"],
)
async def test_a_chunked_body_over_the_limit_is_413_whatever_its_content_type(
    limited: httpx.AsyncClient, sponsor: str, token: Headers, content_type: str | None
) -> None:
    headers = token(sponsor) | ({"content-type": content_type} if content_type else {})
    response = await limited.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, content=_chunks(20_480)
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_declared_length_over_the_limit_is_413_for_a_csv_content_type(
    limited: httpx.AsyncClient, sponsor: str, token: Headers
) -> None:
    response = await limited.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor) | {"content-type": "text/csv"},
        content=b" " * 20_480,
    )
    assert response.status_code == 413


async def test_a_csv_import_over_its_limit_is_413_naming_the_limit(
    limited: httpx.AsyncClient, sponsor: str, token: Headers
) -> None:
    rows = "".join(f"big{i}@{sponsor}.example,Lead {i}\n" for i in range(2000))
    response = await limited.post(
        f"/api/v1/sponsors/{sponsor}/leads/import",
        headers=token(sponsor) | {"content-type": "Text/CSV; charset=utf-8"},
        content=_chunks(len(rows) + 4096),
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["field"] == "body"
    assert "20480 bytes" in error["message"]


async def _asgi_post(
    app: FastAPI, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bool]:
    """POST through the ASGI interface; the status and whether the body was ever read."""
    read = False
    status = 0

    async def receive() -> Message:
        nonlocal read
        read = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return status, read


@pytest.mark.parametrize(
    ("path", "authorization"),
    [
        ("/api/v1/sponsors/sp-x/campaigns", None),
        ("/api/v1/sponsors/sp-x/leads/import", b"Bearer not-a-jwt"),
        ("/api/v1/sponsors/sp-x/leads/bulk", b"Basic dXNlcjpwdw=="),
        ("/api/v1/suppressions", None),
    ],
)
async def test_an_unauthenticated_request_is_refused_before_its_body_is_read(
    app: FastAPI, path: str, authorization: bytes | None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    if authorization:
        headers.append((b"authorization", authorization))
    status, read = await _asgi_post(app, path, headers)
    assert status == 401
    assert not read


@pytest.fixture(scope="module")
def base_url(migrated: Settings) -> Iterator[str]:
    with served(migrated) as url:
        yield url


def _stream_200_mb(base_url: str, path: str, headers: dict[str, str]) -> int:
    """Send up to 200 MB chunked, stopping once the server answers; the status it gave."""
    host, port = base_url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n{head}\r\n"
    chunk = b"%x\r\n" % 65536 + b"[" * 65536 + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request.encode())
        for _ in range(200 * 16):
            if select.select([sock], [], [], 0)[0]:
                break  # the answer came before the body was sent
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server closed the connection after answering
        answer = b""
        while b"\r\n" not in answer:
            answer += sock.recv(65536)
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("content_type", ["text/csv", "application/json", "text/plain"])
def test_a_streamed_200_mb_body_is_413_and_memory_stays_flat(
    base_url: str, migrated: Settings, content_type: str
) -> None:
    admin = mint_token(migrated, subject="t", scopes=["admin"], sponsor_ids=[])
    gc.collect()
    before = psutil.Process().memory_info().rss
    status = _stream_200_mb(
        base_url,
        "/api/v1/sponsors/sp-none/campaigns",
        {"Authorization": f"Bearer {admin}", "Content-Type": content_type},
    )
    grown = psutil.Process().memory_info().rss - before
    assert status == 413
    assert grown < 60 * 1_048_576, grown


@pytest.mark.parametrize("path", ["/api/v1/sponsors/sp-none/campaigns", "/api/v1/suppressions"])
def test_a_streamed_200_mb_body_without_a_token_is_401_at_once(base_url: str, path: str) -> None:
    gc.collect()
    before = psutil.Process().memory_info().rss
    status = _stream_200_mb(base_url, path, {"Content-Type": "application/json"})
    grown = psutil.Process().memory_info().rss - before
    assert status == 401
    assert grown < 10 * 1_048_576, grown


# ------------------------------------------------------------------ JSON checks on every body


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "content_type",
    [
        "application/JSON",
        "APPLICATION/JSON; charset=utf-8",
        "application/vnd.api+json",
        "Application/Vnd.Api+JSON",
    ],
)
async def test_json_checks_apply_whatever_the_content_type_spelling(
    client: httpx.AsyncClient, sponsor: str, token: Headers, content_type: str
) -> None:
    url = f"/api/v1/sponsors/{sponsor}/campaigns"
    headers = token(sponsor) | {"content-type": content_type}
    deep = orjson.dumps(factories.campaign(draft=True, metadata=_deep(40)))
    response = await client.post(url, headers=headers, content=deep)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "json_too_deep"
    nul = orjson.dumps(factories.campaign(draft=True, name="a\x00b"))
    response = await client.post(url, headers=headers, content=nul)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "nul_character"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_finite_numbers_are_422_wherever_they_are(
    client: httpx.AsyncClient, sponsor: str, token: Headers, constant: bytes
) -> None:
    body = orjson.dumps(
        factories.campaign(
            draft=True,
            audience_type="custom",
            audience_filter={"field": "intent_score", "op": "gte", "value": 0},
        )
    ).replace(b'"value":0', b'"value":' + constant)
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor) | {"content-type": "application/json"},
        content=body,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "non_finite_number"
    assert response.json()["error"]["field"] == "audience_filter.value"


@pytest.mark.parametrize("levels", [300, 5000])
async def test_a_deeply_nested_stored_metadata_does_not_break_the_campaign_list(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Headers,
    sessions: async_sessionmaker[AsyncSession],
    levels: int,
) -> None:
    """A row written before the checks (or straight into the database) still reads."""
    created = await factories.draft(client, sponsor, token(sponsor))
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE campaigns SET metadata = CAST(:m AS jsonb) WHERE id = :id"),
            {"m": '{"a":' * levels + "1" + "}" * levels, "id": created["id"]},
        )
    url = f"/api/v1/sponsors/{sponsor}/campaigns"
    listed = await client.get(url, headers=token(sponsor))
    assert listed.status_code == 200, listed.text
    shown = listed.json()["items"][0]["metadata"]
    assert "[nested too deep]" in orjson.dumps(shown).decode()
    one = await client.get(f"{url}/{created['id']}", headers=token(sponsor))
    assert one.status_code == 200, one.text
