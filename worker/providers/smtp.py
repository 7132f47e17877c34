"""SMTP adapter for self-hosted MTAs: pooled ``aiosmtplib`` connections, TLS, DKIM.

A batch is sent message by message (one envelope per recipient) over one
connection taken from a pool of ``SMTP_POOL_SIZE`` connections that stay open
across batches; batches in flight at the same time use different connections.

Delivery is **at least once**. An SMTP server has no idempotency key: if the
worker dies after the server accepted a message but before the row was
recorded as sent, the message is sent again. Two things narrow that gap:

* within one process, a retry of a batch with the same idempotency key skips
  the messages the server already accepted (they are remembered by key), and
  two copies of a batch sent at once run one after the other;
* every message carries a ``Message-ID`` derived from its delivery row, so a
  copy sent again after a crash has the same ``Message-ID`` as the first one
  and receivers that deduplicate on it show one message (the message itself
  is built and signed in ``worker.providers.smtp_message``).

Error mapping (``aiosmtplib`` -> ``service.errors``):

* 4xx replies (to MAIL, RCPT or DATA), timeouts, refused or dropped
  connections -> ``TransientProviderError`` for the batch (the sender retries
  it with the same key; messages already accepted are not sent again);
* 5xx to MAIL, RCPT or DATA of one message -> that message's ``SendResult``
  carries the error (``smtp_550: …``); the rest of the batch goes on;
* 5xx to AUTH, EHLO or STARTTLS, or a TLS certificate the CA file does not
  trust -> ``PermanentProviderError`` (a configuration problem: the same
  request will fail again).

Any failure that is not a reply to one message closes that connection, and
the pool opens a fresh one for the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Literal

import aiosmtplib

from service.errors import PermanentProviderError, ProviderError, TransientProviderError
from worker.providers.accepted import AcceptedBatches
from worker.providers.base import OutgoingEmail, SendResult
from worker.providers.smtp_message import DKIMSigner, build_message

__all__ = ["SMTPProvider"]

log = logging.getLogger(__name__)

TLSMode = Literal["starttls", "tls", "none"]

# A connection idle longer than this is checked with NOOP before use: servers
# drop idle clients (Postfix after 300 s), and a dead connection found in the
# middle of a batch would cost a retry.
IDLE_CHECK_SECONDS = 30.0


@dataclass(slots=True)
class _Connection:
    smtp: aiosmtplib.SMTP
    used_at: float


class SMTPProvider:
    """``EmailProvider`` for any SMTP server (see the module docstring)."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: TLSMode = "starttls",
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        timeout: float = 30.0,
        pool_size: int = 4,
        message_id_domain: str = "localhost",
        dkim_signer: DKIMSigner | None = None,
    ) -> None:
        if tls not in ("starttls", "tls", "none"):
            raise ValueError(f"tls must be 'starttls', 'tls' or 'none', not {tls!r}")
        self.host = host
        self.port = port
        self.tls: TLSMode = tls
        self._username = username
        self._password = password
        self._timeout = timeout
        self._tls_context = ssl.create_default_context(cafile=ca_file) if tls != "none" else None
        self.message_id_domain = message_id_domain
        self.dkim_signer = dkim_signer
        self.pool_size = pool_size
        # None: a free slot without an open connection (opened on first use).
        self._idle: asyncio.LifoQueue[_Connection | None] = asyncio.LifoQueue()
        for _ in range(pool_size):
            self._idle.put_nowait(None)
        self._batches = AcceptedBatches()
        self.connections_opened = 0

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]:
        """Send every message of the batch; see the module docstring for errors."""
        if not emails:
            return []
        batch = self._batches.of(idempotency_key)
        async with batch.lock:
            return await self._send(emails, batch.accepted)

    async def _send(
        self, emails: Sequence[OutgoingEmail], accepted: dict[int, str]
    ) -> list[SendResult]:
        todo = [email for email in emails if email.delivery_id not in accepted]
        if self.dkim_signer is not None:
            # RSA signing in pure Python takes milliseconds a message: off the loop.
            messages = await asyncio.to_thread(self._build_all, todo)
        else:
            messages = self._build_all(todo)

        errors: dict[int, str] = {}
        if todo:
            async with self._connection() as smtp:
                for email, (mid, raw) in zip(todo, messages, strict=True):
                    error = await self._send_one(smtp, email, raw)
                    if error is None:
                        accepted[email.delivery_id] = mid
                    else:
                        errors[email.delivery_id] = error
        return [
            SendResult(delivery_id=e.delivery_id, error=errors[e.delivery_id])
            if e.delivery_id in errors
            else SendResult(delivery_id=e.delivery_id, provider_message_id=accepted[e.delivery_id])
            for e in emails
        ]

    async def aclose(self) -> None:
        """Say QUIT on every pooled connection."""
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            if connection is not None:
                await _close(connection.smtp, quit=True)

    def build(self, email: OutgoingEmail) -> tuple[str, bytes]:
        """The message id (without brackets) and the bytes to send, signed when DKIM is on."""
        return build_message(email, self.message_id_domain, self.dkim_signer)

    def _build_all(self, emails: Sequence[OutgoingEmail]) -> list[tuple[str, bytes]]:
        return [self.build(email) for email in emails]

    async def _send_one(
        self, smtp: aiosmtplib.SMTP, email: OutgoingEmail, raw: bytes
    ) -> str | None:
        """Send one message; its 5xx comes back as the row's error, anything else raises."""
        envelope_from = parseaddr(email.sender)[1] or email.sender
        try:
            refused, _ = await smtp.sendmail(envelope_from, [email.to, *email.cc, *email.bcc], raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return _row_error_or_raise(first.code, first.message)
        except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError) as exc:
            return _row_error_or_raise(exc.code, exc.message)
        except ValueError as exc:  # an address aiosmtplib cannot put on the wire
            return f"invalid_address: {exc}"
        # Only with copies can some addresses be refused and the message still go;
        # it is sent only if the recipient itself was accepted, and never retried,
        # since the copies are out.
        if email.to in refused:
            return f"smtp_{refused[email.to].code}: {refused[email.to].message}"
        return None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """A pooled connection; on any failure it is closed and its slot freed."""
        connection = await self._idle.get()
        try:
            connection = await self._ready(connection)
            yield connection.smtp
            connection.used_at = time.monotonic()
        except BaseException as exc:
            if connection is not None:
                await _close(connection.smtp, quit=False)
                connection = None
            if isinstance(exc, ProviderError | asyncio.CancelledError):
                raise
            if isinstance(exc, aiosmtplib.SMTPException | OSError):
                raise _map_error(exc) from exc
            raise
        finally:
            self._idle.put_nowait(connection)

    async def _ready(self, connection: _Connection | None) -> _Connection:
        if connection is not None:
            if connection.smtp.is_connected and (
                time.monotonic() - connection.used_at < IDLE_CHECK_SECONDS
                or await _answers_noop(connection.smtp)
            ):
                return connection
            await _close(connection.smtp, quit=False)
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self._username,
            password=self._password,
            local_hostname=self.message_id_domain,
            timeout=self._timeout,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            tls_context=self._tls_context,
        )
        await smtp.connect()
        self.connections_opened += 1
        return _Connection(smtp=smtp, used_at=time.monotonic())


def _row_error_or_raise(code: int, message: str) -> str:
    """A 5xx fails the one row; anything else is the server's trouble, not the recipient's."""
    if 500 <= code < 600:
        return f"smtp_{code}: {message}"
    raise TransientProviderError(f"smtp_{code}", message, status=code)


def _map_error(exc: Exception) -> ProviderError:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 400 <= exc.code < 500:
            return TransientProviderError(f"smtp_{exc.code}", exc.message, status=exc.code)
        return PermanentProviderError(f"smtp_{exc.code}", exc.message, status=exc.code)
    if _caused_by(exc, ssl.SSLCertVerificationError):
        return PermanentProviderError("smtp_tls_untrusted", str(exc))
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
        # No STARTTLS offered, no AUTH mechanism in common: the server's set-up.
        return PermanentProviderError("smtp_not_supported", str(exc))
    # Timeouts, refused, reset or dropped connections.
    return TransientProviderError("smtp_connection", f"{type(exc).__name__}: {exc}")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """``aiosmtplib`` wraps socket and TLS errors: look down the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _answers_noop(smtp: aiosmtplib.SMTP) -> bool:
    try:
        await smtp.noop()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


async def _close(smtp: aiosmtplib.SMTP, *, quit: bool) -> None:
    """Close without raising: QUIT when the connection is healthy, else just drop it."""
    try:
        if quit and smtp.is_connected:
            await smtp.quit()
            return
    except (aiosmtplib.SMTPException, OSError):
        pass
    smtp.close()
