"""Every error the service raises on purpose, in one hierarchy.

    ServiceError
    ├── ClientError            the caller's mistake: rendered as JSON 4xx
    │   ├── BadRequest           400
    │   ├── Unauthorized         401
    │   ├── Forbidden            403
    │   ├── NotFound             404
    │   ├── Conflict             409
    │   │   └── InvalidTransition    the campaign's status does not allow that action
    │   ├── PayloadTooLarge      413
    │   ├── UnsupportedMediaType 415
    │   ├── Unprocessable        422 (validation of content: templates, filters)
    │   │   └── InvalidAudience    a filter or audience type that does not parse
    │   └── TooManyRequests      429; carries ``retry_after`` seconds
    ├── RenderError            a template failed for one recipient's data
    ├── InvalidSignature       a webhook its provider did not sign (or stale)
    ├── KafkaUnavailable       the broker did not acknowledge in time: retry
    └── ProviderError          the email provider refused or failed a request
        ├── TransientProviderError   retry later with the same idempotency key
        │   └── RateLimited            429; carries the provider's retry-after
        └── PermanentProviderError   retrying cannot help
            ├── QuotaExceeded          daily/monthly quota: pause the campaign
            └── AccountError           the account or key cannot send: pause the campaign

Client errors carry a stable machine-readable ``code``, a human ``message``
and, where one field is at fault, its dotted path in ``field``. The other
branches never reach a client as they are: a route or a worker decides what
each means (a preview answers a ``RenderError`` with a 422, the sender records
it on the delivery; a bad signature is a 401).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error raised on purpose by campaign-service."""


class ClientError(ServiceError):
    """The request cannot be served as sent; the caller must change it."""

    status_code = 400

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class BadRequest(ClientError):
    status_code = 400


class Unauthorized(ClientError):
    status_code = 401


class Forbidden(ClientError):
    status_code = 403


class NotFound(ClientError):
    status_code = 404


class Conflict(ClientError):
    status_code = 409


class InvalidTransition(Conflict):
    """An action the campaign's current status does not allow (``service.campaigns.lifecycle``).

    Takes plain strings so that this module depends on nothing.
    """

    def __init__(self, status: str, action: str, allowed_from: list[str]) -> None:
        allowed = ", ".join(allowed_from) or "no status"
        super().__init__(
            "invalid_transition",
            f"cannot {action.replace('_', ' ')} a campaign that is {status} (only from {allowed})",
            "status",
        )
        self.status = status
        self.action = action


class PayloadTooLarge(ClientError):
    status_code = 413


class UnsupportedMediaType(ClientError):
    status_code = 415


class Unprocessable(ClientError):
    status_code = 422


class InvalidMessageData(Unprocessable):
    """A message's data that does not match its type's variables: ``field`` names the
    first problem, ``details`` each one (as ``validation_error`` does)."""

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__("invalid_message_data", message, problems[0][0])
        self.problems = problems

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        details = [{"field": field, "message": message} for field, message in self.problems]
        body["error"]["details"] = details  # type: ignore[index]
        return body


class InvalidAudience(Unprocessable):
    """An audience that does not parse: a 422 when a request sends it; a campaign
    whose stored audience no longer parses (caps or fields changed) fails to plan."""


class TooManyRequests(ClientError):
    """A per-sponsor API rate limit was reached; try again after ``retry_after`` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__("rate_limited", message, None)
        self.retry_after = retry_after


class RenderError(ServiceError):
    """A template failed for one recipient (the others still render)."""


class InvalidSignature(ServiceError):
    """The webhook is not one the provider signed (or is too old / too new)."""


class KafkaUnavailable(ServiceError):
    """The broker did not acknowledge a message in time."""


class ProviderError(ServiceError):
    """The email provider did not accept a request."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class TransientProviderError(ProviderError):
    """Timeouts, 5xx, 409 concurrent_idempotent_requests: retry with the same key."""


class RateLimited(TransientProviderError):
    """429 from the provider; ``retry_after`` seconds come from its headers."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(code, message, status=429)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Validation errors and other 4xx: the same request will fail again."""


class QuotaExceeded(PermanentProviderError):
    """``daily_quota_exceeded`` / ``monthly_quota_exceeded``: sending must pause."""


class AccountError(PermanentProviderError):
    """The provider account cannot send as asked, whoever the recipient: an invalid,
    restricted or suspended key, an unverified sending domain. Failing rows one by
    one would only trip the failure-rate guard later; the campaign pauses at once."""
