"""The provider accounts a sending role sends through: the default and sponsors' own.

Each account has its client, its pacer (at its own rate, taking the same
share of the batch partitions as the default one) and a delivery core over
both. The account is resolved once per campaign context or message, never
per recipient; a sponsor without a ``provider`` gets the default account,
which is the single-provider path exactly as before.

Resend templates (stored at the provider) are only made with the default
account: the relay deletes them with the deployment's key. A sponsor's own
Resend account sends whole bodies; Mailgun and SendGrid keep their per-batch
substitution, which needs nothing stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import Settings
from worker.delivery.core import DeliveryCore
from worker.providers import templates_of
from worker.providers.accounts import ProviderClients, choice_key, is_default, parse_choice
from worker.providers.base import EmailProvider, StoredTemplateProvider, TemplateProvider
from worker.ratelimit import Pacer


@dataclass
class Account:
    """One provider account as a role sends through it."""

    core: DeliveryCore
    templates: TemplateProvider | None
    pacer: Pacer


class Accounts:
    """The default account and, built on first use, each sponsor account a role meets."""

    def __init__(
        self,
        provider: EmailProvider,
        pacer: Pacer,
        settings: Settings,
        clients: ProviderClients | None = None,
    ) -> None:
        self.settings = settings
        self.pacer = pacer
        self.clients = clients or ProviderClients(settings)
        self.default = Account(
            DeliveryCore(provider, pacer, settings), templates_of(provider), pacer
        )
        self._accounts: dict[str, Account] = {}

    def of(self, stored: dict[str, object] | None) -> Account:
        """The account a sponsor's ``provider`` names; ``AccountError`` if it cannot send."""
        if not stored:
            return self.default
        key = choice_key(stored)
        account = self._accounts.get(key)
        if account is None:
            account = self._build(key, stored)
            self._accounts[key] = account
        return account

    def _build(self, key: str, stored: dict[str, object]) -> Account:
        choice = parse_choice(stored)
        if is_default(choice, self.settings):
            return self.default
        provider = self.clients.get(key, choice)
        pacer = Pacer(
            choice.rate_per_second or self.settings.provider_rate_per_second, reported=False
        )
        pacer.follow(self.pacer)
        self.pacer.followers.append(pacer)
        templates = templates_of(provider)
        if isinstance(templates, StoredTemplateProvider):
            templates = None
        return Account(DeliveryCore(provider, pacer, self.settings), templates, pacer)
