"""Rules about sponsors: which provider account they may name."""

from __future__ import annotations

import os

from schemas.providers import ProviderChoice
from service.errors import Unprocessable
from service.settings import PROVIDER_MAX_BATCH, Settings

# The service's own settings and secrets: a sponsor may not have one sent to a provider.
RESERVED_ENV_NAMES = frozenset(name.upper() for name in Settings.model_fields)


def check_provider(choice: ProviderChoice | None, settings: Settings) -> None:
    """Refuse, at save, an account the workers could not send through.

    The planner cuts every campaign into ``PROVIDER_BATCH_SIZE`` batches, so a
    provider whose requests carry fewer recipients is refused. A secret's name
    is checked in the API's environment, which deployments share with the workers
    (one config and one secret, docs/providers.md): a typo is a 422 now rather
    than a paused campaign later. A worker that still misses the variable
    pauses the campaign with an account error.
    """
    if choice is None:
        return
    limit = PROVIDER_MAX_BATCH.get(choice.provider)
    if limit is not None and settings.provider_batch_size > limit:
        raise Unprocessable(
            "provider_batch_too_large",
            f"{choice.provider} takes {limit} recipients a request, "
            f"PROVIDER_BATCH_SIZE is {settings.provider_batch_size}",
            "provider.provider",
        )
    for field, name in choice.env_names():
        where = f"provider.credentials.{field}"
        if name.upper() in RESERVED_ENV_NAMES:
            raise Unprocessable(
                "provider_env_reserved", f"{name} is one of the service's own settings", where
            )
        if not os.environ.get(name):
            raise Unprocessable("provider_env_unset", f"{name} is not set", where)
