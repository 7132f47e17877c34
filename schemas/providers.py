"""A sponsor's own email provider: which one, and the names of its credentials.

The database keeps only the *names* of environment variables (``*_env``),
never a secret: the worker reads the secret from its own environment when it
builds the provider client. Whatever a sponsor does not name falls back to the
deployment's setting for that provider (``MAILGUN_API_KEY``, ``SMTP_HOST`` …),
so ``{"provider": "sendgrid"}`` sends through the global SendGrid key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

ProviderName = Literal["resend", "mailgun", "sendgrid", "smtp", "outbox"]

# An environment variable's name, as POSIX shells accept it.
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]

# The names a provider reads from its credentials; everything else is refused.
CREDENTIALS: dict[str, frozenset[str]] = {
    "resend": frozenset({"api_key_env"}),
    "sendgrid": frozenset({"api_key_env"}),
    "mailgun": frozenset({"api_key_env", "domain", "region"}),
    "smtp": frozenset({"host", "port", "username", "password_env"}),
    "outbox": frozenset(),
}


class ProviderCredentials(BaseModel):
    """Names of secrets and the non-secret parts of an account; all optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    api_key_env: EnvName | None = None
    password_env: EnvName | None = None
    domain: str | None = Field(
        default=None, max_length=253, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$"
    )
    region: Literal["us", "eu"] | None = None
    host: str | None = Field(
        default=None, max_length=253, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$"
    )
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = Field(default=None, max_length=320, pattern=r"^[^\r\n\x00]*$")


class ProviderChoice(BaseModel):
    """``{"provider": "mailgun", "credentials": {"api_key_env": "ACME_MAILGUN_KEY", …}}``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    provider: ProviderName
    credentials: ProviderCredentials = Field(default_factory=ProviderCredentials)
    # This account's own request rate; unset: ``PROVIDER_RATE_PER_SECOND``.
    rate_per_second: float | None = Field(default=None, gt=0, le=100_000)

    @model_validator(mode="after")
    def _only_what_the_provider_reads(self) -> ProviderChoice:
        given = {name for name, value in self.credentials if value is not None}
        if extra := sorted(given - CREDENTIALS[self.provider]):
            raise ValueError(f"{self.provider} does not read {', '.join(extra)}")
        return self

    def env_names(self) -> list[tuple[str, str]]:
        """(field, environment variable) for every secret this choice names."""
        return [
            (field, value)
            for field, value in self.credentials
            if field.endswith("_env") and isinstance(value, str)
        ]

    def stored(self) -> dict[str, object]:
        """The choice as the sponsor row keeps it: no unset fields."""
        return self.model_dump(exclude_none=True)
