"""Values out of range, sponsor addresses, token claims, the metrics endpoint, CSV lines."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from tests import factories

Headers = Callable[..., dict[str, str]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ numbers and dates in range

BIG = 2**63
INT32 = 2**31


async def test_ids_beyond_bigint_in_the_path_are_422(
    client: httpx.AsyncClient, sponsor: str, token: Headers
) -> None:
    for method, url in (
        ("GET", f"/api/v1/sponsors/{sponsor}/leads/{BIG}"),
        ("DELETE", f"/api/v1/sponsors/{sponsor}/leads/{BIG}"),
        ("GET", f"/api/v1/sponsors/{sponsor}/templates/{uuid.uuid4()}/versions/{INT32}"),
    ):
        response = await client.request(method, url, headers=token(sponsor))
        assert response.status_code == 422, (url, response.text)


async def test_ids_beyond_bigint_in_the_query_and_body_are_422(
    client: httpx.AsyncClient, sponsor: str, token: Headers
) -> None:
    draft = await factories.draft(client, sponsor, token(sponsor))
    base = f"/api/v1/sponsors/{sponsor}/campaigns"
    preview = await client.get(
        f"{base}/{draft['id']}/preview?lead_id={BIG}", headers=token(sponsor)
    )
    assert preview.status_code == 422, preview.text
    assert preview.json()["error"]["field"] == "lead_id"
    test_send = await client.post(
        f"{base}/{draft['id']}/test",
        headers=token(sponsor),
        json={"emails": ["a@b.example"], "lead_id": BIG},
    )
    assert test_send.status_code == 422, test_send.text
    created = await client.post(
        base,
        headers=token(sponsor),
        json={"name": "T", "template_id": str(uuid.uuid4()), "template_version": INT32},
    )
    assert created.status_code == 422, created.text
    assert created.json()["error"]["field"] == "template_version"


async def test_a_cursor_holding_an_id_beyond_bigint_is_refused_not_500(
    client: httpx.AsyncClient, sponsor: str, token: Headers
) -> None:
    from service.http import encode_cursor

    for path in ("leads", "suppressions"):
        response = await client.get(
            f"/api/v1/sponsors/{sponsor}/{path}?cursor={encode_cursor(BIG)}",
            headers=token(sponsor),
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_dates_beyond_what_postgresql_stores_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], value: str
) -> None:
    response = await client.get("/api/v1/stats/campaigns", params={"from": value}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "from"


async def test_a_cursor_holding_a_time_postgresql_cannot_store_is_refused_not_500(
    client: httpx.AsyncClient, sponsor: str, token: Headers
) -> None:
    from service.http import encode_cursor

    cursor = encode_cursor("0001-01-01T00:00:00+14:00", str(uuid.uuid4()))
    for path in ("campaigns", "templates"):
        response = await client.get(
            f"/api/v1/sponsors/{sponsor}/{path}?cursor={cursor}", headers=token(sponsor)
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_cursor"


# ------------------------------------------------------------------ sponsors, tokens, metrics, CSV


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_email", "a@one.example, b@two.example"),
        ("from_email", "Smith, John <j@one.example>"),
        ("from_email", "not an address"),
        ("reply_to", "a@one.example;b@two.example"),
        ("reply_to", "x@one.example\r\nBcc: y@two.example"),
    ],
)
async def test_a_sponsor_takes_exactly_one_valid_address(
    client: httpx.AsyncClient, admin: dict[str, str], field: str, value: str
) -> None:
    body = {"name": "N", "from_email": "news@one.example", field: value}
    response = await client.put(
        f"/api/v1/sponsors/sp-{uuid.uuid4().hex[:10]}", headers=admin, json=body
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["soon", [1], {"at": 1}, True, float("inf")])
async def test_a_token_whose_time_claim_is_not_a_number_is_401_not_500(
    client: httpx.AsyncClient, migrated: Settings, claim: str, value: Any
) -> None:
    assert migrated.auth_jwt_secret is not None
    claims: dict[str, Any] = {"sub": "t", "scope": "admin", "exp": int(time.time()) + 60}
    claims[claim] = value
    forged = jwt.encode(claims, migrated.auth_jwt_secret.get_secret_value(), algorithm="HS256")
    response = await client.get(
        "/api/v1/stats/campaigns", headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] in ("invalid_token", "token_expired")


async def test_metrics_behind_a_token_need_it(migrated: Settings) -> None:
    settings = migrated.model_copy(update={"metrics_token": SecretStr("scrape-me")})
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/metrics")).status_code == 401
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
            assert right.status_code == 200
            assert b"campaigns" in right.content


async def test_metrics_on_their_own_port_leave_the_api_route_off(migrated: Settings) -> None:
    port = _free_port()
    settings = migrated.model_copy(update={"metrics_port": port})
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/metrics")).status_code == 404
        async with httpx.AsyncClient() as outside:
            scraped = await outside.get(f"http://127.0.0.1:{port}/metrics")
    assert scraped.status_code == 200
    assert b"campaigns" in scraped.content


async def test_a_csv_error_names_its_line_after_a_quoted_newline(
    client: httpx.AsyncClient, sponsor: str, token: Headers
) -> None:
    body = (
        "email,name\n"
        f'one@{sponsor}.example,"Two\nLines"\n'
        f'two@{sponsor}.example,"Three\r\nmore\nlines"\n'
        "not-an-address,Bad\n"
    )
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/leads/import",
        headers=token(sponsor, scopes="leads:write") | {"content-type": "text/csv"},
        content=body,
    )
    assert response.status_code == 200, response.text
    assert [r["line"] for r in response.json()["rejected"]] == [7]
