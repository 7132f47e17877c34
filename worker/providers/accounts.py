"""Provider clients for sponsors' own accounts, built once per account and process.

A sponsor's ``provider`` (``schemas.providers.ProviderChoice``) names the
provider and the environment variables that hold its secrets; the client is
the deployment's settings with that provider and those credentials swapped
in, built by the same code as the default one (``build_provider``). Clients
are cached by the choice as stored, so every sponsor on one account shares
one connection pool.
"""

from __future__ import annotations

import os

import orjson
from pydantic import SecretStr, ValidationError

from schemas.providers import ProviderChoice
from service.errors import AccountError
from service.settings import Settings
from worker.providers import InstrumentedProvider, build_provider


def choice_key(stored: dict[str, object]) -> str:
    """The same account, however its fields were ordered: one cache key."""
    return orjson.dumps(stored, option=orjson.OPT_SORT_KEYS).decode()


def parse_choice(stored: dict[str, object]) -> ProviderChoice:
    """The stored choice, checked again: a row written by hand fails as an account error."""
    try:
        return ProviderChoice.model_validate(stored)
    except ValidationError as exc:
        raise AccountError("provider_choice_invalid", str(exc).splitlines()[0]) from None


def is_default(choice: ProviderChoice, settings: Settings) -> bool:
    """The deployment's own provider, credentials and rate: the default account."""
    named = any(value is not None for _, value in choice.credentials)
    return (
        choice.provider == settings.email_provider and not named and choice.rate_per_second is None
    )


def _secret(name: str) -> SecretStr:
    value = os.environ.get(name)
    if not value:
        raise AccountError("provider_env_unset", f"{name} is not set in the worker's environment")
    return SecretStr(value)


def account_settings(settings: Settings, choice: ProviderChoice) -> Settings:
    """The deployment's settings with the account's provider and credentials in place."""
    credentials = choice.credentials
    update: dict[str, object] = {"email_provider": choice.provider}
    if credentials.api_key_env is not None:
        update[f"{choice.provider}_api_key"] = _secret(credentials.api_key_env)
    if credentials.password_env is not None:
        update["smtp_password"] = _secret(credentials.password_env)
    for field, setting in (
        ("domain", "mailgun_domain"),
        ("region", "mailgun_region"),
        ("host", "smtp_host"),
        ("port", "smtp_port"),
        ("username", "smtp_username"),
    ):
        if (value := getattr(credentials, field)) is not None:
            update[setting] = value
    return settings.model_copy(update=update)


class ProviderClients:
    """One instrumented client per sponsor account, shared by a process's roles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, InstrumentedProvider] = {}

    def get(self, key: str, choice: ProviderChoice) -> InstrumentedProvider:
        """The account's client; an ``AccountError`` if its secrets are missing."""
        client = self._clients.get(key)
        if client is None:
            try:
                client = build_provider(account_settings(self.settings, choice))
            except RuntimeError as exc:  # what build_provider says a provider lacks
                raise AccountError("provider_credentials_missing", str(exc)) from None
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
