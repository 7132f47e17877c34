"""A fake Mailgun messages API (``POST /v3/{domain}/messages``) that follows the spec.

Built from ``tests/specs/mailgun``: the form is validated against
``openapi.yaml``'s request schema for the messages endpoint, the limits come
from ``api-facts.json`` and error bodies are ``{"message": ...}`` as
``errors.json`` says.

In a test::

    with FakeMailgun() as fake:             # serves from a thread
        provider = MailgunProvider("key-test", "mg.example.com", api_url=fake.url)
        ...
        assert len(fake.messages_to("a@example.com")) == 1

As a process, for benchmarks (prints ``listening on http://...`` once ready)::

    python -m tests.fakes.mailgun_server --port 8025 [--no-validate]

and read the counts from ``GET /_fake/stats``.

Behaviour worth knowing:

* Auth: HTTP Basic, user ``api``, password ``api_key`` (any when None). Missing
  or wrong: 401 with the body ``Forbidden`` (as the spec's example).
* Validation (400 ``{"message"}``): the schema (``from``, ``to``, ``subject``
  required; enums of the ``o:`` options; repeated fields only where the schema
  has an array), then the documented rules: one of ``text``/``html``/
  ``amp-html``/``template``; at most 1,000 recipients; ``recipient-variables``
  a JSON object of objects; at most 10 ``o:tag`` of 128 ASCII characters;
  ``o:``/``h:``/``v:``/``t:`` parameters at most 16 KB together; a body over
  25 MB is 413. ``attachment`` and ``inline`` must be file parts, and only
  they may be; each is recorded (``FormFile``) on the request and on every
  message of it.
* Each ``to`` is recorded as one message, with ``%recipient.KEY%`` replaced in
  the subject, bodies, ``h:`` headers and ``v:`` variables from its
  ``recipient-variables`` (an unknown key is left as it is, so a test sees it).
  Every message of a request gets the request's id, as Mailgun does.
* Faults: ``fail_next(n, status)`` answers the next ``n`` requests with
  ``status``; a 429 carries ``X-RateLimit-Limit/-Remaining/-Reset`` (reset in
  epoch milliseconds, as recorded from Mailgun), ``Retry-After`` when
  ``retry_after`` is given, and the spec's "try again after N seconds" text.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import uvicorn
import yaml

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs" / "mailgun"
MESSAGES_PATH = "/v3/{domain_name}/messages"
_ROUTE = re.compile(r"^/v3/([^/]+)/messages$")
_SUBSTITUTION = re.compile(r"%recipient\.([A-Za-z0-9_.-]+)%")
_OPTION_PREFIXES = ("o:", "h:", "v:", "t:")
_FILE_FIELDS = frozenset(("attachment", "inline"))

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@functools.cache
def facts() -> dict[str, Any]:
    """``api-facts.json``."""
    loaded: dict[str, Any] = json.loads((SPEC_DIR / "api-facts.json").read_text("utf-8"))
    return loaded


@functools.cache
def request_schema() -> dict[str, Any]:
    """The spec's multipart request schema for ``POST /v3/{domain_name}/messages``."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (SPEC_DIR / "openapi.yaml").open(encoding="utf-8") as fh:
        spec: dict[str, Any] = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
    body = spec["paths"][MESSAGES_PATH]["post"]["requestBody"]["content"]
    ref: str = body["multipart/form-data"]["schema"]["$ref"]
    schema: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(request_schema())


def _limit(name: str) -> int:
    value = facts()["limits"][name]["value"]
    return int(value)


@dataclass(frozen=True)
class FormFile:
    """A file part of the form (``attachment`` or ``inline``), as received."""

    name: str
    filename: str
    content_type: str
    content: bytes


def parse_form(body: bytes, content_type: str) -> tuple[list[tuple[str, str]], list[FormFile]]:
    """The (name, value) fields and the file parts of a ``multipart/form-data`` body, in order."""
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if found is None:
        raise ValueError("no boundary in Content-Type")
    delimiter = b"--" + found.group(1).encode()
    fields: list[tuple[str, str]] = []
    files: list[FormFile] = []
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        value = value.removesuffix(b"\r\n")
        name = re.search(rb'(?:^|[; ])name="([^"]*)"', head)
        if name is None:
            raise ValueError("a part without a name")
        filename = re.search(rb'filename="([^"]*)"', head)
        if filename is None:
            fields.append((name.group(1).decode(), value.decode()))
            continue
        kind = re.search(rb"(?im)^content-type:[ \t]*([^\r\n;]+)", head)
        files.append(
            FormFile(
                name.group(1).decode(),
                filename.group(1).decode(),
                kind.group(1).decode().strip() if kind else "application/octet-stream",
                value,
            )
        )
    return fields, files


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """The (name, value) fields of a ``multipart/form-data`` body, in order (no files)."""
    return parse_form(body, content_type)[0]


@dataclass
class RecordedMessage:
    """One recipient's copy of an accepted request, with its substitutions made."""

    id: str
    to: str
    sender: str
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str]
    variables: dict[str, str]
    tags: list[str]
    attachments: list[FormFile] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)


@dataclass
class RecordedRequest:
    """One accepted request: its id and form."""

    id: str
    domain: str
    fields: list[tuple[str, str]]
    recipients: int
    files: list[FormFile] = field(default_factory=list)


@dataclass
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    messages: list[RecordedMessage] = field(default_factory=list)
    refused: int = 0
    faults: list[int | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _fill(template: str, values: dict[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        return str(values[key]) if key in values else match.group(0)

    return _SUBSTITUTION.sub(one, template)


class FakeMailgun:
    """The fake API; ``start()`` serves it from a daemon thread (see the module docstring)."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        validate: bool = True,
        record_content: bool = True,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.validate = validate
        self.record_content = record_content
        self.retry_after: float | None = None
        self.state = _State()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL to give the provider as ``api_url`` (valid once started)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeMailgun:
        config = uvicorn.Config(self, host=self.host, port=self.port, log_level="warning")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, name="fake-mailgun", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake Mailgun server did not start")
            time.sleep(0.02)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeMailgun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ controls and records

    def fail_next(self, n: int = 1, status: int = 500, *, after: int = 0) -> None:
        """Answer ``n`` requests with ``status`` (429: rate-limit headers too), once
        ``after`` more have been served normally."""
        with self.state.lock:
            self.state.faults.extend([None] * after + [status] * n)

    def reset(self) -> None:
        with self.state.lock:
            self.state.requests.clear()
            self.state.messages.clear()
            self.state.faults.clear()
            self.state.refused = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def messages(self) -> list[RecordedMessage]:
        with self.state.lock:
            return list(self.state.messages)

    def messages_to(self, address: str) -> list[RecordedMessage]:
        return [m for m in self.messages if m.to.lower() == address.lower()]

    def stats(self) -> dict[str, int]:
        with self.state.lock:
            return {
                "requests": len(self.state.requests),
                "messages": sum(r.recipients for r in self.state.requests),
                "refused": self.state.refused,
            }

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, answer, extra = self.handle(scope["method"], scope["path"], headers, bytes(body))
        raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        kind = b"text/plain" if isinstance(answer, bytes) else b"application/json"
        response_headers = [(b"content-type", kind)]
        response_headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": raw})

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Answer one request: (status, JSON-able body or raw bytes, extra headers)."""
        if method == "GET" and path == "/_fake/stats":
            return 200, self.stats(), {}
        route = _ROUTE.match(path)
        if method != "POST" or route is None:
            return 404, {"message": "not found"}, {}
        if not self._authorized(headers.get("authorization", "")):
            return 401, b"Forbidden", {}
        with self.state.lock:
            fault = self.state.faults.pop(0) if self.state.faults else None
        if fault is not None:
            return self._fault(fault)
        if len(body) > 25 * 2**20:
            return self._refuse(413, "Request Entity Too Large")
        try:
            fields, files = parse_form(body, headers.get("content-type", ""))
        except (ValueError, UnicodeDecodeError) as exc:
            return self._refuse(400, f"the body is not multipart/form-data: {exc}")
        error = self._files_error(fields, files) or self._form_error(fields, files)
        if error is not None:
            return self._refuse(400, error)
        message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{uuid.uuid4().hex[:16]}@{route[1]}>"
        self._record(message_id, route.group(1), fields, files)
        return 200, {"id": message_id, "message": "Queued. Thank you."}, {}

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == "api" and (self.api_key is None or password == self.api_key)

    def _refuse(self, status: int, message: str) -> tuple[int, Any, dict[str, str]]:
        with self.state.lock:
            self.state.refused += 1
        return status, {"message": message}, {}

    def _fault(self, status: int) -> tuple[int, Any, dict[str, str]]:
        if status != 429:
            return status, {"message": "Internal Server Error"}, {}
        wait = self.retry_after if self.retry_after is not None else 1.0
        headers = {
            "X-RateLimit-Limit": "2000000",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int((time.time() + wait) * 1000)),
        }
        if self.retry_after is not None:
            headers["Retry-After"] = str(int(self.retry_after))
        message = (
            "Domain example.com is not allowed to send: account-requests-per-sec "
            f"limit exceeded, try again after {int(wait)} seconds"
        )
        return 429, {"message": message}, headers

    @staticmethod
    def _files_error(fields: list[tuple[str, str]], files: list[FormFile]) -> str | None:
        for name, _ in fields:
            if name in _FILE_FIELDS:
                return f"'{name}' must be a file part (multipart/form-data)"
        for file in files:
            if file.name not in _FILE_FIELDS:
                return f"'{file.name}' is not a file parameter"
            if not file.filename:
                return f"'{file.name}' has no file name"
        return None

    def _form_error(self, fields: list[tuple[str, str]], files: list[FormFile]) -> str | None:
        form: dict[str, Any] = {}
        schema = request_schema()["properties"]
        for file in files:  # the schema says "string, format binary": its name stands in
            form.setdefault(file.name, []).append(file.filename)
        for name, value in fields:
            if schema.get(name, {}).get("type") == "array":
                form.setdefault(name, []).append(value)
            elif name in form:
                return f"'{name}' parameter given more than once"
            else:
                form[name] = value
        if self.validate:
            problem = jsonschema.exceptions.best_match(_validator().iter_errors(form))
            if problem is not None:
                return f"{'.'.join(map(str, problem.path)) or 'form'}: {problem.message}"
        if not any(form.get(k) for k in ("text", "html", "amp-html", "template")):
            return (
                "Need at least one of 'text', 'html', 'amp-html' or 'template' "
                "parameters specified."
            )
        if len(form["to"]) > _limit("max_recipients_per_request"):
            return "Too many recipients: at most 1000 per batch"
        tags = form.get("o:tag", [])
        if len(tags) > 10 or any(len(t) > 128 or not t.isascii() for t in tags):
            return "at most 10 tags of up to 128 ASCII characters"
        options = sum(len(n) + len(v.encode()) for n, v in fields if n.startswith(_OPTION_PREFIXES))
        if options > 16 * 1024:
            return "Send options (parameters starting with o:, h:, or v:) are limited to 16KB total"
        variables = form.get("recipient-variables")
        if variables is not None:
            try:
                decoded = json.loads(variables)
            except ValueError:
                return "recipient-variables is not valid JSON"
            if not isinstance(decoded, dict) or not all(
                isinstance(v, dict) for v in decoded.values()
            ):
                return "recipient-variables must be an object of objects"
        return None

    def _record(
        self, message_id: str, domain: str, fields: list[tuple[str, str]], files: list[FormFile]
    ) -> None:
        recipients = [v for n, v in fields if n == "to"]
        request = RecordedRequest(
            message_id,
            domain,
            fields if self.record_content else [],
            len(recipients),
            files if self.record_content else [],
        )
        messages = (
            [self._message(message_id, to, fields, files) for to in recipients]
            if self.record_content
            else []
        )
        with self.state.lock:
            self.state.requests.append(request)
            self.state.messages.extend(messages)

    @staticmethod
    def _message(
        message_id: str, to: str, fields: list[tuple[str, str]], files: list[FormFile]
    ) -> RecordedMessage:
        single = dict(fields)
        values: dict[str, Any] = json.loads(single.get("recipient-variables", "{}")).get(to, {})
        return RecordedMessage(
            id=message_id.strip("<>"),
            to=to,
            sender=single["from"],
            subject=_fill(single["subject"], values),
            html=_fill(single["html"], values) if "html" in single else None,
            text=_fill(single["text"], values) if "text" in single else None,
            headers={n[2:]: _fill(v, values) for n, v in fields if n.startswith("h:")},
            variables={n[2:]: _fill(v, values) for n, v in fields if n.startswith("v:")},
            tags=[v for n, v in fields if n == "o:tag"],
            attachments=list(files),
            cc=[v for n, v in fields if n == "cc"],
            bcc=[v for n, v in fields if n == "bcc"],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args()
    fake = FakeMailgun(
        host=args.host, port=args.port, validate=not args.no_validate, record_content=False
    )
    config = uvicorn.Config(fake, host=args.host, port=args.port, log_level="warning")
    print(f"listening on http://{args.host}:{args.port}", flush=True)
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
