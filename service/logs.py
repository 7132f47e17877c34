"""Structured logs: one JSON object per line in production, readable text in a terminal.

``LOG_FORMAT`` is ``json``, ``text`` or ``auto`` (text when stderr is a
terminal). Context set with ``bind(campaign_id=…, batch=…)`` (contextvars, so
per request and per task) rides on every line logged under it; the API binds
``request_id`` and ``sponsor_id``. Email addresses are masked in every
message and field, and secrets never reach a log line: settings hold them as
``SecretStr`` and ``redact`` strips bearer tokens and API keys.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import logging.config
import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039

CONTEXT_KEYS = ("request_id", "sponsor_id", "campaign_id", "batch")
EMAIL = re.compile(r"([A-Za-z0-9._%+-]+)@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
SECRET = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+|\b(re_[A-Za-z0-9_]{6,})|"
    r"((?:api[_-]?key|password|secret|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
)


def mask_email(address: str) -> str:
    """``lead@example.com`` → ``l***@example.com#1a2b3c4d``: recognisable to whoever knows it."""
    local, _, domain = address.partition("@")
    digest = hashlib.sha256(address.lower().encode()).hexdigest()[:8]
    return f"{local[:1]}***@{domain}#{digest}"


def redact(text: str) -> str:
    """Mask email addresses and strip credentials from free text."""

    def secret(match: re.Match[str]) -> str:
        if match.group(1):
            return f"{match.group(1)}[redacted]"
        if match.group(2):
            return "[redacted]"
        return f"{match.group(3)}[redacted]"

    text = SECRET.sub(secret, text)
    return EMAIL.sub(lambda m: mask_email(m.group(0)), text)


def bind(**values: Any) -> contextvars.Token[dict[str, Any]]:
    """Add fields to every log line of the current context; returns a token for ``reset``."""
    return _context.set({**_context.get(), **{k: v for k, v in values.items() if v is not None}})


def reset(token: contextvars.Token[dict[str, Any]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def bound(**values: Any) -> Iterator[None]:
    """``with bound(campaign_id=…):`` — the fields hold inside the block only."""
    token = bind(**values)
    try:
        yield
    finally:
        _context.reset(token)


def context() -> dict[str, Any]:
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in _context.get().items():
            entry[key] = redact(str(value)) if isinstance(value, str) else value
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, context appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        fields = " ".join(f"{k}={v}" for k, v in _context.get().items())
        return f"{line} {fields}" if fields else line


def logging_config(level: str = "INFO", fmt: str = "auto") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict (also handed to uvicorn for its worker processes)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    formatter = "JsonFormatter" if fmt == "json" else "TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": f"service.logs.{formatter}"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # RequestContext writes one access line per request, with its request id.
            "uvicorn.access": {"handlers": [], "propagate": False},
            # One line per provider call or demo poll is noise; failures still show.
            "httpx": {"level": "WARNING"},
        },
    }


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Install the formatter on the root logger (``LOG_LEVEL``, ``LOG_FORMAT``)."""
    logging.config.dictConfig(logging_config(level, fmt))


_SPONSOR_PATH = re.compile(r"^/api/v1/sponsors/([^/]+)")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContext:
    """ASGI middleware: a request id (``X-Request-ID`` in, or a new one) on every log line and
    on the answer, the sponsor of the path, and one access log line per request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log = logging.getLogger("service.access")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        sponsor = _SPONSOR_PATH.match(scope.get("path", ""))
        token = bind(request_id=request_id, sponsor_id=sponsor.group(1)[:64] if sponsor else None)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope.get("path") not in ("/healthz", "/readyz", "/metrics"):
                self.log.info(
                    "%s %s %d %.1fms",
                    scope.get("method"),
                    scope.get("path"),
                    status,
                    (time.perf_counter() - started) * 1000,
                )
            _context.reset(token)
