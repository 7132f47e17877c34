"""A provider per sponsor: the sponsor's settings name a provider account, the
workers send that sponsor's campaigns and messages through it, everyone else's
through ``EMAIL_PROVIDER``. Secrets stay in the environment; the row keeps names."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests import factories
from tests.conftest import SPONSOR_MAILGUN_KEY, TokenFactory, eventually
from tests.fakes.mailgun_server import FakeMailgun
from tests.fakes.resend_server import FakeResend
from tests.messages.test_message_types import message_type
from worker.delivery.accounts import Accounts
from worker.providers import build_provider
from worker.providers.accounts import ProviderClients
from worker.ratelimit import Pacer

pytestmark = pytest.mark.usefixtures("workers")

DOMAIN = "mg.acme.example"


def mailgun(key_env: str, **more: Any) -> dict[str, Any]:
    return {
        "provider": "mailgun",
        "credentials": {"api_key_env": key_env, "domain": DOMAIN, **more},
    }


async def put_sponsor(
    client: httpx.AsyncClient, admin: dict[str, str], provider: dict[str, Any] | None
) -> httpx.Response:
    sponsor_id = f"sp-{uuid.uuid4().hex[:10]}"
    body: dict[str, Any] = {
        "name": "Acme",
        "from_email": "news@acme.example",
        "postal_address": "1 Test Street, Berlin",
        "provider": provider,
    }
    return await client.put(f"/api/v1/sponsors/{sponsor_id}", headers=admin, json=body)


async def sponsor_on(
    client: httpx.AsyncClient, admin: dict[str, str], provider: dict[str, Any] | None
) -> str:
    response = await put_sponsor(client, admin, provider)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def campaign_to(
    client: httpx.AsyncClient, sponsor: str, headers: dict[str, str], n: int
) -> tuple[str, list[str]]:
    leads = factories.leads(n, domain=f"{sponsor}.example")
    await factories.add_leads(client, sponsor, headers, leads)
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=factories.campaign()
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"]), [lead["email"] for lead in leads]


async def status_of(
    client: httpx.AsyncClient, sponsor: str, headers: dict[str, str], campaign: str, wanted: str
) -> dict[str, Any]:
    url = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign}"

    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(url, headers=headers)).json()
        return body if body["status"] == wanted else None

    return await eventually(reached)


@pytest.fixture
def acme_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ACME_MAILGUN_KEY", SPONSOR_MAILGUN_KEY)
    return "ACME_MAILGUN_KEY"


async def test_each_sponsors_campaign_reaches_its_own_provider(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    token: TokenFactory,
    fake: FakeResend,
    fake_mailgun: FakeMailgun,
    acme_key: str,
) -> None:
    default = await sponsor_on(client, admin, None)
    acme = await sponsor_on(client, admin, mailgun(acme_key, region="eu"))
    sent_default = await campaign_to(client, default, token(default), 3)
    sent_acme = await campaign_to(client, acme, token(acme), 4)
    await status_of(client, default, token(default), sent_default[0], "sent")
    await status_of(client, acme, token(acme), sent_acme[0], "sent")

    for address in sent_default[1]:
        assert len(fake.messages_to(address)) == 1
        assert fake_mailgun.messages_to(address) == []
    for address in sent_acme[1]:
        assert len(fake_mailgun.messages_to(address)) == 1
        assert fake.messages_to(address) == []
    request = next(r for r in fake_mailgun.requests if sent_acme[1][0] in str(r.fields))
    assert request.domain == DOMAIN


async def test_a_message_goes_through_the_sponsors_own_provider(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    token: TokenFactory,
    fake: FakeResend,
    fake_mailgun: FakeMailgun,
    acme_key: str,
) -> None:
    acme = await sponsor_on(client, admin, mailgun(acme_key))
    base = f"/api/v1/sponsors/{acme}"
    response = await client.post(f"{base}/message-types", headers=token(acme), json=message_type())
    assert response.status_code == 201, response.text
    to = f"{uuid.uuid4().hex[:8]}@customer.example"
    body = {"type": "lead.qualified.alert", "to": to, "data": {"lead_name": "Ada"}}
    response = await client.post(f"{base}/messages", headers=token(acme), json=body)
    assert response.status_code == 202, response.text

    async def sent() -> bool:
        return bool(fake_mailgun.messages_to(to))

    await eventually(sent)
    assert fake_mailgun.messages_to(to)[0].subject == "New lead: Ada"
    assert fake.messages_to(to) == []


async def test_a_secret_missing_in_the_workers_environment_pauses_the_campaign(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    token: TokenFactory,
    fake_mailgun: FakeMailgun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"GONE_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(name, SPONSOR_MAILGUN_KEY)
    acme = await sponsor_on(client, admin, mailgun(name))
    monkeypatch.delenv(name)
    campaign, emails = await campaign_to(client, acme, token(acme), 2)
    paused = await status_of(client, acme, token(acme), campaign, "paused")
    assert "provider_env_unset" in str(paused)
    assert fake_mailgun.messages_to(emails[0]) == []


async def test_the_sponsor_shows_the_names_of_its_secrets_never_their_values(
    client: httpx.AsyncClient, admin: dict[str, str], acme_key: str
) -> None:
    response = await put_sponsor(client, admin, mailgun(acme_key))
    assert response.status_code == 201, response.text
    assert response.json()["provider"] == {
        "provider": "mailgun",
        "credentials": {
            "api_key_env": acme_key,
            "password_env": None,
            "domain": DOMAIN,
            "region": None,
            "host": None,
            "port": None,
            "username": None,
        },
        "rate_per_second": None,
    }
    assert SPONSOR_MAILGUN_KEY not in response.text


@pytest.mark.parametrize(
    ("provider", "code", "field"),
    [
        ({"provider": "postmark"}, "validation_error", "provider.provider"),
        (
            {"provider": "sendgrid", "credentials": {"domain": DOMAIN}},
            "validation_error",
            "provider",
        ),
        (
            {"provider": "mailgun", "credentials": {"api_key_env": "NOT SET"}},
            "validation_error",
            "provider.credentials.api_key_env",
        ),
        (mailgun("ACME_NEVER_SET_KEY"), "provider_env_unset", "provider.credentials.api_key_env"),
        (mailgun("DATABASE_URL"), "provider_env_reserved", "provider.credentials.api_key_env"),
        (mailgun("auth_jwt_secret"), "provider_env_reserved", "provider.credentials.api_key_env"),
    ],
)
async def test_a_provider_the_workers_could_not_use_is_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    provider: dict[str, Any],
    code: str,
    field: str,
) -> None:
    response = await put_sponsor(client, admin, provider)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)


async def test_a_provider_with_smaller_requests_than_the_batches_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    settings: Settings = app.state.settings
    app.state.settings = settings.model_copy(update={"provider_batch_size": 500})
    try:
        response = await put_sponsor(client, admin, {"provider": "resend"})
    finally:
        app.state.settings = settings
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "provider_batch_too_large"


async def test_sponsors_on_one_account_share_one_client_and_one_pacer_at_its_rate(
    migrated: Settings, acme_key: str
) -> None:
    default_pacer = Pacer(100)
    clients = ProviderClients(migrated)
    provider = build_provider(migrated)
    accounts = Accounts(provider, default_pacer, migrated, clients)
    try:
        first = accounts.of(mailgun(acme_key) | {"rate_per_second": 40})
        again = accounts.of({"rate_per_second": 40, **mailgun(acme_key)})
        assert first is again
        assert accounts.of(None) is accounts.default
        assert accounts.of({"provider": "resend"}) is accounts.default
        assert first.core.provider.name == "mailgun"
        default_pacer.set_share(1, 4)
        assert (first.pacer.rate, default_pacer.rate) == (10, 25)
    finally:
        await clients.aclose()
        await provider.aclose()


async def test_a_test_send_goes_through_the_sponsors_own_provider(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    token: TokenFactory,
    fake: FakeResend,
    fake_mailgun: FakeMailgun,
    acme_key: str,
) -> None:
    acme = await sponsor_on(client, admin, mailgun(acme_key))
    body = factories.campaign(draft=True)
    campaigns = f"/api/v1/sponsors/{acme}/campaigns"
    response = await client.post(campaigns, headers=token(acme), json=body)
    assert response.status_code == 202, response.text
    to = f"qa-{uuid.uuid4().hex[:6]}@test-send.example"
    response = await client.post(
        f"{campaigns}/{response.json()['id']}/test", headers=token(acme), json={"emails": [to]}
    )
    assert response.status_code == 202, response.text

    async def arrived() -> bool:
        return bool(fake_mailgun.messages_to(to))

    await eventually(arrived)
    assert fake.messages_to(to) == []


async def test_a_test_send_is_not_sent_by_the_default_account_when_the_sponsors_cannot_send(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    token: TokenFactory,
    fake: FakeResend,
    fake_mailgun: FakeMailgun,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"GONE_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(name, SPONSOR_MAILGUN_KEY)
    acme = await sponsor_on(client, admin, mailgun(name))
    monkeypatch.delenv(name)
    campaigns = f"/api/v1/sponsors/{acme}/campaigns"
    response = await client.post(
        campaigns, headers=token(acme), json=factories.campaign(draft=True)
    )
    assert response.status_code == 202, response.text
    to = f"qa-{uuid.uuid4().hex[:6]}@test-send.example"
    response = await client.post(
        f"{campaigns}/{response.json()['id']}/test", headers=token(acme), json={"emails": [to]}
    )
    assert response.status_code == 202, response.text

    async def refused() -> bool:
        return any("provider_env_unset" in r.getMessage() for r in caplog.records)

    await eventually(refused)
    assert fake.messages_to(to) == [] and fake_mailgun.messages_to(to) == []
