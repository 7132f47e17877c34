"""Email providers behind one interface; ``build_provider`` picks one from settings."""

from __future__ import annotations

from service.settings import Settings
from worker.providers.base import EmailProvider


def build_provider(settings: Settings) -> EmailProvider:
    """The provider ``EMAIL_PROVIDER`` names, configured from the environment."""
    if settings.email_provider == "resend":
        from worker.providers.resend import ResendProvider

        if settings.resend_api_key is None:
            raise RuntimeError("EMAIL_PROVIDER=resend needs RESEND_API_KEY")
        return ResendProvider(
            api_key=settings.resend_api_key.get_secret_value(),
            api_url=settings.resend_api_url,
            timeout=settings.provider_timeout_seconds,
        )
    from worker.providers.outbox import OutboxProvider

    return OutboxProvider(settings.outbox_dir)
