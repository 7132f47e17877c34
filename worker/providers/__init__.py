"""Email providers behind one interface; ``build_provider`` picks one from settings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from service import metrics
from service.errors import ProviderError, RateLimited
from service.settings import Settings
from worker.providers.base import EmailProvider, OutgoingEmail, SendResult, TemplateProvider


class InstrumentedProvider:
    """Any provider, with its request latency and 429s counted (``service.metrics``)."""

    def __init__(self, inner: EmailProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.accepts_json_parts: bool = getattr(inner, "accepts_json_parts", False)
        self.batches_messages: bool = getattr(inner, "batches_messages", False)

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self.inner.send_batch(emails, idempotency_key)
        except RateLimited:
            outcome = "rate_limited"
            metrics.PROVIDER_RATE_LIMITED.labels(self.name).inc()
            raise
        except ProviderError as exc:
            outcome = exc.code[:40]
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            metrics.PROVIDER_LATENCY.labels(self.name, outcome).observe(
                time.perf_counter() - started
            )

    async def aclose(self) -> None:
        await self.inner.aclose()


def templates_of(provider: EmailProvider) -> TemplateProvider | None:
    """The provider's template calls, if it keeps templates (instrumented or not)."""
    inner = provider.inner if isinstance(provider, InstrumentedProvider) else provider
    return inner if isinstance(inner, TemplateProvider) else None


def build_provider(settings: Settings) -> InstrumentedProvider:
    """The provider ``EMAIL_PROVIDER`` names, configured from the environment, instrumented."""
    return InstrumentedProvider(_build(settings))


def _build(settings: Settings) -> EmailProvider:
    if settings.email_provider == "resend":
        from worker.providers.resend import ResendProvider

        if settings.resend_api_key is None:
            raise RuntimeError("EMAIL_PROVIDER=resend needs RESEND_API_KEY")
        return ResendProvider(
            api_key=settings.resend_api_key.get_secret_value(),
            api_url=settings.resend_api_url,
            timeout=settings.provider_timeout_seconds,
        )
    if settings.email_provider == "sendgrid":
        from worker.providers.sendgrid import SendGridProvider

        if settings.sendgrid_api_key is None:
            raise RuntimeError("EMAIL_PROVIDER=sendgrid needs SENDGRID_API_KEY")
        return SendGridProvider(
            api_key=settings.sendgrid_api_key.get_secret_value(),
            api_url=settings.sendgrid_api_url,
            timeout=settings.provider_timeout_seconds,
        )
    if settings.email_provider == "mailgun":
        from worker.providers.mailgun import MailgunProvider

        if settings.mailgun_api_key is None or not settings.mailgun_domain:
            raise RuntimeError("EMAIL_PROVIDER=mailgun needs MAILGUN_API_KEY and MAILGUN_DOMAIN")
        return MailgunProvider(
            settings.mailgun_api_key.get_secret_value(),
            settings.mailgun_domain,
            region=settings.mailgun_region,
            api_url=settings.mailgun_api_url,
            timeout=settings.provider_timeout_seconds,
        )
    if settings.email_provider == "smtp":
        from worker.providers.smtp import SMTPProvider
        from worker.providers.smtp_message import dkim_signer_from

        password = settings.smtp_password
        dkim_key = settings.dkim_private_key
        return SMTPProvider(
            settings.smtp_host,
            settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=password.get_secret_value() if password else None,
            ca_file=settings.smtp_ca_file,
            timeout=settings.smtp_timeout_seconds,
            pool_size=settings.smtp_pool_size,
            message_id_domain=settings.message_id_domain
            or urlsplit(settings.public_base_url).hostname
            or "localhost",
            dkim_signer=dkim_signer_from(
                settings.dkim_selector,
                settings.dkim_domain,
                dkim_key.get_secret_value() if dkim_key else None,
                settings.dkim_private_key_path,
            ),
        )
    from worker.providers.outbox import OutboxProvider

    return OutboxProvider(settings.outbox_dir)
