"""A real SMTP server for tests (``aiosmtpd``): records messages, speaks TLS, checks AUTH.

In a test::

    with FakeSMTP(tls="starttls", tls_context=ctx, credentials={"u": "p"}) as server:
        provider = SMTPProvider("127.0.0.1", server.port, tls="starttls", ...)
        ...
        assert server.messages[0].rcpt_tos == ["a@example.com"]

As a process, for benchmarks (prints ``listening on 127.0.0.1:PORT`` once ready;
counts only, contents dropped)::

    python -m tests.fakes.smtp_server --port 8026

Behaviour worth knowing:

* ``tls="starttls"`` requires STARTTLS before MAIL; ``tls="tls"`` is implicit TLS
  (the listening socket is TLS); both need ``tls_context`` (a server context).
* ``credentials``: AUTH (PLAIN, LOGIN) is required and checked; 535 on a bad
  password. Under STARTTLS, AUTH is offered only after the TLS handshake.
* Faults: ``reject(address, reply)`` answers ``reply`` to every RCPT of that
  address; ``fail_next(n, reply, stage)`` answers ``reply`` to the next ``n``
  ``MAIL``/``RCPT``/``DATA`` commands (``stage``). Replies are full SMTP lines
  such as ``"451 4.3.0 Try again later"``.
* ``connections`` counts TCP connections that sent at least one MAIL command
  (by client address and port), to check that a client reuses them.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

Stage = Literal["mail", "rcpt", "data"]


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    peer: tuple[str, int]
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None


def parse_email(data: bytes) -> EmailMessage:
    """A received message (or an .eml file's bytes), parsed with the modern policy."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


class _Handler:
    def __init__(self, server: FakeSMTP) -> None:
        self.server = server

    async def handle_MAIL(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if reply := self.server._take_fault("mail"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if reply := self.server._take_fault("rcpt"):
            return reply
        with self.server._lock:
            reply = self.server._rejected.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if reply := self.server._take_fault("data"):
            return reply
        data = envelope.original_content or b""
        login = session.auth_data  # what _authenticate put there: the user name
        received = Received(
            peer=_peer(session),
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            data=data if self.server.record_content else b"",
            tls=session.ssl is not None or self.server.tls == "tls",
            login=login if isinstance(login, str) else None,
        )
        with self.server._lock:
            self.server.accepted += 1
            self.server.connections.add(received.peer)
            if self.server.record_content:
                self.server.messages.append(received)
        return "250 2.0.0 OK queued"


class _Controller(Controller):
    def factory(self) -> SMTPServer:
        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH over implicit TLS does not "require TLS": it does.
            warnings.simplefilter("ignore", UserWarning)
            server: SMTPServer = super().factory()  # type: ignore[no-untyped-call]
            return server


class FakeSMTP:
    """An ``aiosmtpd`` server in a thread of its own (see the module docstring)."""

    def __init__(
        self,
        *,
        tls: Literal["starttls", "tls", "none"] = "none",
        tls_context: ssl.SSLContext | None = None,
        credentials: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record_content: bool = True,
    ) -> None:
        if tls != "none" and tls_context is None:
            raise ValueError("TLS needs a server tls_context")
        self.tls = tls
        self.host = host
        self.port = port or _free_port(host)
        self.credentials = credentials
        self.record_content = record_content
        self.messages: list[Received] = []
        self.connections: set[tuple[str, int]] = set()
        self.accepted = 0
        self._lock = threading.Lock()
        self._rejected: dict[str, str] = {}
        self._faults: dict[Stage, list[str]] = {"mail": [], "rcpt": [], "data": []}
        kwargs: dict[str, Any] = {"hostname": host, "port": self.port, "ready_timeout": 10}
        if tls == "starttls":
            kwargs.update(tls_context=tls_context, require_starttls=True)
        elif tls == "tls":
            kwargs.update(ssl_context=tls_context)
        if credentials is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                # Implicit TLS is TLS from the first byte; aiosmtpd only knows STARTTLS.
                auth_require_tls=tls == "starttls",
            )
        self._controller = _Controller(_Handler(self), **kwargs)

    def start(self) -> FakeSMTP:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> FakeSMTP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reject(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        """Answer ``reply`` to every RCPT TO of ``address``."""
        with self._lock:
            self._rejected[address.lower()] = reply

    def accept(self, address: str) -> None:
        """Stop rejecting ``address``."""
        with self._lock:
            self._rejected.pop(address.lower(), None)

    def fail_next(self, count: int, reply: str, stage: Stage = "data") -> None:
        """Answer ``reply`` to the next ``count`` commands of ``stage``."""
        with self._lock:
            self._faults[stage].extend([reply] * count)

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.connections.clear()
            self.accepted = 0
            self._rejected.clear()
            for faults in self._faults.values():
                faults.clear()

    def messages_to(self, address: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if address in m.rcpt_tos]

    def _take_fault(self, stage: Stage) -> str | None:
        with self._lock:
            faults = self._faults[stage]
            return faults.pop(0) if faults else None

    def _authenticate(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.credentials.get(login) == password
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


def _peer(session: Session) -> tuple[str, int]:
    peer: Any = session.peer  # typed loosely by aiosmtpd; a (host, port) for TCP
    return (str(peer[0]), int(peer[1]))


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description="A local SMTP server that counts messages")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = FakeSMTP(host=args.host, port=args.port, record_content=False).start()
    print(f"listening on {server.host}:{server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
