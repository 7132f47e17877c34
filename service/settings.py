"""All configuration, read from the environment (12-factor).

Every field maps to an upper-case environment variable of the same name
(``database_url`` ← ``DATABASE_URL``). The README lists them with defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.tracking.tokens import TokenSigner

KafkaConfig = dict[str, str | int | float | bool]

# What PostgreSQL's own tools and hosting providers print, and SQLAlchemy's spelling.
_POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "postgresql+asyncpg"})
# Recipients one provider request may carry; a provider not named takes any batch.
PROVIDER_MAX_BATCH = {"resend": 100, "outbox": 100, "smtp": 100, "mailgun": 1000, "sendgrid": 1000}


def async_database_url(url: str) -> str:
    """``url`` as the asyncpg URL the engine and alembic need.

    ``postgresql://`` and ``postgres://`` (libpq's forms) name no driver, which
    SQLAlchemy would take for a synchronous one. libpq's ``sslmode`` is
    asyncpg's ``ssl``, with the same values.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError("DATABASE_URL is not a URL SQLAlchemy can read") from None
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(
            f"DATABASE_URL must start with postgresql://, postgres:// or "
            f"postgresql+asyncpg://, not {parsed.drivername}://"
        )
    query = dict(parsed.query)
    if "sslmode" in query:
        query.setdefault("ssl", query.pop("sslmode"))
    parsed = parsed.set(drivername="postgresql+asyncpg", query=query)
    return parsed.render_as_string(hide_password=False)


class Settings(BaseSettings):
    """Typed settings; secrets are ``SecretStr`` so they never print."""

    # An invalid DATABASE_URL would otherwise be echoed, password included, in the error.
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

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

    email_provider: Literal["resend", "outbox", "smtp", "mailgun", "sendgrid"] = "outbox"
    resend_api_key: SecretStr | None = None
    resend_api_url: str = "https://api.resend.com"
    resend_templates: bool = True
    # Seconds a sent or cancelled campaign's provider template is kept before the
    # relay deletes it: emails the provider accepted may still be queued there.
    resend_template_grace_seconds: float = Field(default=86400.0, ge=0)
    provider_rate_per_second: float = Field(default=2.0, gt=0)
    # Up to the provider's own maximum (PROVIDER_MAX_BATCH), checked below.
    provider_batch_size: int = Field(default=100, ge=1, le=1000)
    provider_timeout_seconds: float = Field(default=30.0, gt=0)
    outbox_dir: str = "var/outbox"
    # Mailgun (EMAIL_PROVIDER=mailgun): batch sending with recipient variables.
    mailgun_api_key: SecretStr | None = None
    mailgun_domain: str | None = None
    mailgun_region: Literal["us", "eu"] = "us"
    mailgun_api_url: str | None = None  # overrides MAILGUN_REGION (e.g. a fake)
    mailgun_webhook_signing_key: SecretStr | None = None
    mailgun_webhook_max_age_seconds: int = Field(default=300, ge=1)

    public_base_url: str = "http://127.0.0.1:8000"
    tracking_secret: SecretStr | None = None
    tracking_secret_previous: SecretStr | None = None

    auth_jwt_secret: SecretStr | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None

    relay_interval_seconds: float = Field(default=1.0, gt=0)
    # How often the timers role looks for due timers (reminders); a timer fires at most
    # this late while the role runs.
    timers_poll_seconds: float = Field(default=1.0, gt=0)
    # How long after an appointment is completed its feedback request is sent.
    appointment_feedback_delay_seconds: int = Field(default=2 * 3600, ge=0)

    # Retention: deliveries and raw events live in partitions the relay's leader
    # creates ahead and drops once older than this (docs/operations.md).
    retention_days: int = Field(default=90, ge=1)
    # Replies and conversions kept for the digests (docs/digests.md); a digest
    # reads one period, so they are not kept as long as deliveries.
    digest_events_retention_days: int = Field(default=90, ge=1)
    retention_archive_dir: str | None = None
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    delivery_partition_size: int = Field(default=10_000_000, ge=100)

    # Sending at scale: windows, retries, auto-pause, recovery, shutdown.
    # 48: with 2 senders x 8 batches in flight, a window of 24 left about a
    # quarter of the cores idle at 200,000 recipients (8,558 against 7,348/s).
    send_window_batches: int = Field(default=48, ge=1)
    send_max_in_flight: int = Field(default=8, ge=1)
    send_max_tries: int = Field(default=5, ge=1)
    send_retry_topic_attempts: int = Field(default=3, ge=0)
    send_retry_base_seconds: float = Field(default=5.0, ge=0)
    # The fast lane (docs/sending.md): the share of PROVIDER_RATE_PER_SECOND kept for
    # one-to-one messages while they have work; campaigns borrow it back when idle.
    messages_rate_share: float = Field(default=0.2, gt=0, lt=1)
    # A message the provider still refuses after SEND_MAX_TRIES waits on a timer:
    # this many more attempts, the first this late, each wait doubling.
    message_retry_attempts: int = Field(default=5, ge=0)
    message_retry_base_seconds: float = Field(default=30.0, gt=0)
    # An exhausted provider quota: messages stay queued and are tried again this late.
    message_quota_retry_seconds: float = Field(default=3600.0, gt=0)
    send_failure_pause_ratio: float = Field(default=0.5, ge=0, le=1)
    send_failure_pause_min: int = Field(default=200, ge=1)
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    reconcile_stall_seconds: float = Field(default=60.0, gt=0)
    worker_shutdown_grace_seconds: float = Field(default=30.0, gt=0)

    # SMTP provider (EMAIL_PROVIDER=smtp): pooled connections, TLS, Message-ID, DKIM.
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: str | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    smtp_pool_size: int = Field(default=4, ge=1)
    message_id_domain: str | None = None  # default: the host of PUBLIC_BASE_URL
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key: SecretStr | None = None  # PEM; or DKIM_PRIVATE_KEY_PATH
    dkim_private_key_path: str | None = None
    # Rendering and compliance headers (List-Id, List-Unsubscribe mailto).
    list_id_domain: str | None = None  # default: the host of PUBLIC_BASE_URL
    unsubscribe_mailto: str | None = None  # e.g. unsubscribe@example.com
    # What one render of a sponsor's template may cost: far above any real newsletter.
    template_max_output_chars: int = Field(default=1_000_000, ge=10_000)
    template_render_seconds: float = Field(default=2.0, gt=0)
    # After sending: tracking hot paths, provider webhooks, ingestion, reputation guard.
    ip_hash_secret: SecretStr | None = None
    tracking_spool_dir: str = "var/tracking-spool"
    tracking_spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    tracking_produce_timeout_ms: int = Field(default=10_000, ge=100)
    tracking_link_cache_size: int = Field(default=10_000, ge=1)
    tracking_delivery_cache_size: int = Field(default=200_000, ge=1)
    tracking_trusted_proxy_hops: int = Field(default=0, ge=0)
    tracking_machine_click_seconds: float = Field(default=10.0, ge=0)
    resend_webhook_secret: SecretStr | None = None
    # SendGrid (EMAIL_PROVIDER=sendgrid) and its Signed Event Webhook (docs/providers.md).
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_url: str = "https://api.sendgrid.com"
    sendgrid_webhook_public_key: str | None = None  # base64 DER, as SendGrid shows it
    sendgrid_webhook_tolerance_seconds: int = Field(default=600, ge=1)
    webhook_produce_timeout_seconds: float = Field(default=10.0, gt=0)
    # Per-batch work (transaction, lookups, counters) is most of the cost below ~2,000.
    ingest_batch_size: int = Field(default=2000, ge=1)
    reputation_complaint_rate: float = Field(default=0.001, ge=0, le=1)
    reputation_bounce_rate: float = Field(default=0.02, ge=0, le=1)
    reputation_window: int = Field(default=1000, ge=1)
    reputation_min_deliveries: int = Field(default=200, ge=1)
    # Running in production: logs, metrics, startup, shutdown, abuse and input limits.
    log_level: str = "INFO"
    log_format: Literal["json", "text", "auto"] = "auto"
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)  # 0: no metrics server
    # The API's metrics: behind a bearer token, or on a port of their own (0: on the API's port).
    metrics_token: SecretStr | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    startup_wait_seconds: float = Field(default=60.0, ge=0)
    api_shutdown_grace_seconds: int = Field(default=30, ge=1)
    api_rate_limits_enabled: bool = True
    api_rate_create_per_minute: int = Field(default=10, ge=1)
    api_rate_read_per_minute: int = Field(default=30, ge=1)
    api_max_body_mb: float = Field(default=20.0, gt=0)
    api_max_json_depth: int = Field(default=32, ge=2)
    # Audiences: CSV import size, lead sync batch, time budget of an exact preview count.
    leads_import_max_bytes: int = Field(default=1024 * 2**20, ge=1)
    lead_sync_batch: int = Field(default=500, ge=1)
    audience_preview_exact_ms: int = Field(default=60, ge=0)

    @model_validator(mode="after")
    def _batch_fits_the_provider(self) -> Settings:
        limit = PROVIDER_MAX_BATCH.get(self.email_provider)
        if limit is not None and self.provider_batch_size > limit:
            raise ValueError(
                f"PROVIDER_BATCH_SIZE={self.provider_batch_size} is over {self.email_provider}'s "
                f"limit of {limit} recipients per request"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, url: str) -> str:
        return async_database_url(url)

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
