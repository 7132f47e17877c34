"""All configuration, read from the environment (12-factor).

Every field maps to an upper-case environment variable of the same name
(``database_url`` ← ``DATABASE_URL``). The README lists them with defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.tracking.tokens import TokenSigner

KafkaConfig = dict[str, str | int | float | bool]


class Settings(BaseSettings):
    """Typed settings; secrets are ``SecretStr`` so they never print."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/campaigns"
    database_pool_size: int = Field(default=10, ge=1)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = ""
    kafka_security_protocol: str | None = None  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_batch_partitions: int = Field(default=12, ge=1)
    kafka_partitions: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)

    email_provider: Literal["resend", "outbox"] = "outbox"
    resend_api_key: SecretStr | None = None
    resend_api_url: str = "https://api.resend.com"
    provider_rate_per_second: float = Field(default=2.0, gt=0)
    provider_batch_size: int = Field(default=100, ge=1, le=100)
    provider_timeout_seconds: float = Field(default=30.0, gt=0)
    outbox_dir: str = "var/outbox"

    public_base_url: str = "http://127.0.0.1:8000"
    tracking_secret: SecretStr | None = None
    tracking_secret_previous: SecretStr | None = None

    auth_jwt_secret: SecretStr | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None

    relay_interval_seconds: float = Field(default=1.0, gt=0)

    # Sending at scale: windows, retries, auto-pause, recovery, shutdown.
    send_window_batches: int = Field(default=24, ge=1)
    send_max_in_flight: int = Field(default=8, ge=1)
    send_max_tries: int = Field(default=5, ge=1)
    send_retry_topic_attempts: int = Field(default=3, ge=0)
    send_retry_base_seconds: float = Field(default=5.0, ge=0)
    send_failure_pause_ratio: float = Field(default=0.5, ge=0, le=1)
    send_failure_pause_min: int = Field(default=200, ge=1)
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    reconcile_stall_seconds: float = Field(default=60.0, gt=0)
    worker_shutdown_grace_seconds: float = Field(default=30.0, gt=0)

    # Audiences: CSV import size, lead sync batch, time budget of an exact preview count.
    leads_import_max_bytes: int = Field(default=1024 * 2**20, ge=1)
    lead_sync_batch: int = Field(default=500, ge=1)
    audience_preview_exact_ms: int = Field(default=40, ge=0)

    def topic(self, name: str) -> str:
        """The full topic name, with the deployment's prefix."""
        return f"{self.kafka_topic_prefix}{name}"

    def tracking_signer(self) -> TokenSigner:
        """Signs and checks pixel, click and unsubscribe tokens (``TRACKING_SECRET``)."""
        if self.tracking_secret is None:
            raise RuntimeError("TRACKING_SECRET is not set")
        previous = self.tracking_secret_previous
        return TokenSigner(
            self.tracking_secret.get_secret_value().encode(),
            previous.get_secret_value().encode() if previous else None,
        )

    def kafka_config(self) -> KafkaConfig:
        """librdkafka settings shared by producers, consumers and the admin client."""
        config: KafkaConfig = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "allow.auto.create.topics": "false",
        }
        optional = {
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            ),
            "ssl.ca.location": self.kafka_ssl_ca_location,
        }
        config.update({key: value for key, value in optional.items() if value})
        return config


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Settings from an explicit environment mapping (for child processes we start)."""
    fields = Settings.model_fields
    return Settings.model_validate({k.lower(): v for k, v in env.items() if k.lower() in fields})


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
