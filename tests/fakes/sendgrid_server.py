"""A fake SendGrid Mail Send API (``POST /v3/mail/send``) that follows the spec, and a signer.

Built from ``tests/specs/sendgrid``: request bodies are validated against the
request schema of ``tsg_mail_v3.yaml`` (with the top-level ``custom_args`` an
object, as the official SDK sends it: see the README there); errors use the
``{"errors": [{message, field, help}]}`` shape of ``errors.json``; limits and
rate-limit headers follow ``api-facts.json``.

In a test::

    with FakeSendGrid() as fake:             # serves from a thread
        provider = SendGridProvider("SG.test", fake.url)
        ...
        assert len(fake.messages_to("a@example.com")) == 1

As a process, for benchmarks (prints ``listening on http://...`` once ready)::

    python -m tests.fakes.sendgrid_server --port 8026 [--no-validate]

(``--no-validate`` also records no content: only the number of messages.)

and read the counts from ``GET /_fake/stats``; ``POST /_fake/reset`` clears them.

Behaviour worth knowing:

* Auth: ``Authorization: Bearer <api_key>``; missing or other: 401.
* Validation (400, ``errors[].field`` naming the property): the schema, then
  1000 recipients (to + cc + bcc) per request, ``text/plain`` before
  ``text/html``, substitutions over 10,000 bytes per personalization,
  custom_args values that are not strings, a body of 30 MB or more (413),
  attachments whose content is not base64, whose filename or type holds CRLF
  or ";", or inline without a ``content_id``.
* Answers 202 with an empty body and an ``X-Message-Id``; each recipient's
  message is recorded with the content as it would be delivered (each
  substitution key replaced by its value), its ``custom_args`` and its
  ``attachments`` as sent.
* Faults: ``fail_next(n, status)`` answers the next ``n`` requests with
  ``status``; a 429 carries ``X-RateLimit-Limit/-Remaining/-Reset`` (reset
  ``retry_in`` seconds ahead). ``rate_limit`` requests per second (token
  bucket) answers 429 the same way when exceeded.
* ``sign(body)`` signs a webhook body as SendGrid's Signed Event Webhook does,
  with the test key pair of ``vectors.json`` (``PUBLIC_KEY`` verifies it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import uvicorn
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs" / "sendgrid"
VECTORS = json.loads((SPEC_DIR / "vectors.json").read_text())
PUBLIC_KEY: str = VECTORS["generated"]["public_key"]
MAX_RECIPIENTS = 1000
MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_SUBSTITUTION_BYTES = 10_000
_HELP = "https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors"


@cache
def request_schema() -> dict[str, Any]:
    """The Mail Send request schema, its ``$ref``s resolvable, ``custom_args`` an object."""
    spec = yaml.safe_load((SPEC_DIR / "tsg_mail_v3.yaml").read_text())
    body = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
    schema = dict(body["schema"])
    schema["properties"] = dict(schema["properties"])
    schema["properties"]["custom_args"] = {"type": "object"}
    schema["components"] = spec["components"]
    return schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = request_schema()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def sign(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The Signed Event Webhook headers of ``body``, with the test key of ``vectors.json``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    pem = VECTORS["generated"]["private_key_pem_pkcs8"].encode()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def wire_body(events: list[dict[str, Any]]) -> bytes:
    """A batch of events laid out as SendGrid posts it: compact, ``\\r\\n`` between events."""
    return (",\r\n".join(json.dumps(e, separators=(",", ":")) for e in events)).join(
        "[]"
    ).encode() + b"\r\n"


@dataclass
class RecordedMessage:
    """One recipient's message as SendGrid would deliver it."""

    message_id: str
    sender: str
    to: str
    subject: str
    html: str
    text: str
    headers: dict[str, str]
    custom_args: dict[str, str]
    categories: list[str]
    # As sent: content (base64), type, filename, disposition, content_id.
    attachments: list[dict[str, str]] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)


@dataclass
class _State:
    messages: list[RecordedMessage] = field(default_factory=list)
    # Messages and requests, when their content is not recorded.
    counted: int = 0
    counted_requests: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)
    answered: dict[int, int] = field(default_factory=dict)


def _error(status: int, message: str, field_name: str | None = None, **headers: str) -> Response:
    body = {"errors": [{"message": message, "field": field_name, "help": _HELP}]}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(path: Any) -> str | None:
    return ".".join(str(p) for p in path) or None


def _attachment_error(body: dict[str, Any]) -> tuple[str, str | None] | None:
    """The errors page's "Attachment errors" (the schema checks the rest)."""
    for i, item in enumerate(body.get("attachments") or []):
        where = f"attachments.{i}"
        try:
            base64.b64decode(str(item.get("content", "")), validate=True)
        except ValueError:
            return "The attachment content must be base64 encoded.", f"{where}.content"
        for name in ("filename", "type"):
            value = str(item.get(name, ""))
            if "\r" in value or "\n" in value or ";" in value:
                return f"The {name} of your attachment can't contain CRLF characters.", where
        if item.get("disposition") == "inline" and not item.get("content_id"):
            return "The content_id is required when the disposition is inline.", where
    return None


def _semantic_error(body: dict[str, Any]) -> tuple[str, str | None] | None:
    found = _attachment_error(body)
    if found is not None:
        return found
    personalizations = body["personalizations"]
    recipients = sum(len(p.get(k) or []) for p in personalizations for k in ("to", "cc", "bcc"))
    if recipients > MAX_RECIPIENTS:
        return "There is a limit of 1000 total recipients (to + cc + bcc) per request.", None
    types = [c.get("type") for c in body.get("content") or []]
    if (
        "text/plain" in types
        and "text/html" in types
        and types.index("text/plain") > types.index("text/html")
    ):
        return "If present, text/plain must be first, followed by text/html.", "content"
    for i, p in enumerate(personalizations):
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            for j, to in enumerate(p.get(kind) or []):
                address = str(to.get("email", ""))
                if "@" not in address:
                    return (
                        "Does not contain a valid address.",
                        f"personalizations.{i}.{kind}.{j}.email",
                    )
                if address.lower() in seen:  # SendGrid's documented rule and wording
                    return (
                        "Each email address in the personalization block should be unique "
                        "between to, cc, and bcc. We found the first duplicate instance of "
                        f"[{address}] in the personalizations.{i}.{kind} field.",
                        f"personalizations.{i}.{kind}.{j}.email",
                    )
                seen.add(address.lower())
        subs = p.get("substitutions") or {}
        if sum(len(str(k).encode()) + len(str(v).encode()) for k, v in subs.items()) > 10_000:
            return "Substitutions may not exceed 10,000 bytes.", f"personalizations.{i}"
        if not all(isinstance(v, str) for v in (p.get("custom_args") or {}).values()):
            return "All values of custom arguments object must be strings.", f"personalizations.{i}"
        if not (p.get("subject") or body.get("subject")):
            return "The subject is required.", "subject"
    return None


def _fill(value: str, subs: Mapping[str, Any]) -> str:
    if not subs:
        return value
    pattern = re.compile("|".join(re.escape(k) for k in sorted(subs, key=len, reverse=True)))
    return pattern.sub(lambda m: str(subs[m.group(0)]), value)


def _address(value: Mapping[str, Any]) -> str:
    return f"{value['name']} <{value['email']}>" if value.get("name") else str(value["email"])


class FakeSendGrid:
    """The fake, served from a background thread on a free local port."""

    def __init__(
        self,
        api_key: str = "SG.test",
        *,
        validate: bool = True,
        record_content: bool = True,
        rate_limit: float | None = None,
        retry_in: float = 1.0,
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.validate = validate
        self.record_content = record_content
        self.rate_limit = rate_limit
        self.retry_in = retry_in
        self.port = port
        self._state = _State()
        self._lock = threading.Lock()
        self._tokens = rate_limit or 0.0
        self._refilled = time.monotonic()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v3/mail/send", self._mail_send, methods=["POST"]),
                Route("/_fake/stats", self._stats, methods=["GET"]),
                Route("/_fake/reset", self._reset, methods=["POST"]),
            ]
        )

    # ----------------------------------------------------------------- control

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeSendGrid:
        sock = socket.socket()
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the fake SendGrid did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` mail sends with ``status`` (429: with rate-limit headers)."""
        with self._lock:
            self._state.faults.extend([status] * n)

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    @property
    def messages(self) -> list[RecordedMessage]:
        with self._lock:
            return list(self._state.messages)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every accepted request body, as sent."""
        with self._lock:
            return list(self._state.requests)

    @property
    def answered(self) -> dict[int, int]:
        """How many mail sends got each status."""
        with self._lock:
            return dict(self._state.answered)

    def messages_to(self, address: str) -> list[RecordedMessage]:
        return [m for m in self.messages if m.to == address]

    # ----------------------------------------------------------------- routes

    async def _stats(self, request: Request) -> Response:
        with self._lock:
            state = self._state
            return JSONResponse(
                {
                    "messages": len(state.messages) + state.counted,
                    "requests": len(state.requests) + state.counted_requests,
                    "answered": state.answered,
                }
            )

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({})

    async def _mail_send(self, request: Request) -> Response:
        answer = await self._answer(request)
        with self._lock:
            answered = self._state.answered
            answered[answer.status_code] = answered.get(answer.status_code, 0) + 1
        return answer

    def _limited(self) -> Response:
        reset = str(int(time.time() + self.retry_in))
        return _error(
            429,
            "too many requests",
            None,
            **{
                "X-RateLimit-Limit": "150",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset,
            },
        )

    def _take_token(self) -> bool:
        if self.rate_limit is None:
            return True
        now = time.monotonic()
        self._tokens = min(self.rate_limit, self._tokens + (now - self._refilled) * self.rate_limit)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _answer(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "The provided authorization grant is invalid, expired, or revoked")
        with self._lock:
            fault = self._state.faults.pop(0) if self._state.faults else None
            limited = not self._take_token()
        if fault == 429 or limited:
            return self._limited()
        if fault is not None:
            return _error(fault, "internal server error" if fault >= 500 else "fault")
        raw = await request.body()
        if len(raw) >= MAX_BODY_BYTES:
            return _error(413, "content too large")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "Invalid UTF8 in request.")
        if self.validate:
            error = next(iter(_validator().iter_errors(body)), None)
            if error is not None:
                return _error(400, error.message, _field(error.absolute_path))
        if not isinstance(body, dict) or not isinstance(body.get("personalizations"), list):
            return _error(400, "The personalizations field is required.", "personalizations")
        semantic = _semantic_error(body)
        if semantic is not None:
            return _error(400, *semantic)
        message_id = uuid.uuid4().hex[:22]
        self._record(body, message_id)
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    def _record(self, body: dict[str, Any], message_id: str) -> None:
        if not self.record_content:
            with self._lock:
                self._state.counted += sum(len(p["to"]) for p in body["personalizations"])
                self._state.counted_requests += 1
            return
        content = {c["type"]: c["value"] for c in body.get("content") or []}
        recorded = []
        for p in body["personalizations"]:
            subs = p.get("substitutions") or {}
            for to in p["to"]:
                recorded.append(
                    RecordedMessage(
                        message_id=message_id,
                        sender=_address(p.get("from") or body["from"]),
                        to=str(to["email"]),
                        subject=_fill(str(p.get("subject") or body.get("subject") or ""), subs),
                        html=_fill(content.get("text/html", ""), subs),
                        text=_fill(content.get("text/plain", ""), subs),
                        headers={**(body.get("headers") or {}), **(p.get("headers") or {})},
                        custom_args={
                            **(body.get("custom_args") or {}),
                            **(p.get("custom_args") or {}),
                        },
                        categories=list(body.get("categories") or []),
                        attachments=list(body.get("attachments") or []),
                        cc=[str(a["email"]) for a in p.get("cc") or []],
                        bcc=[str(a["email"]) for a in p.get("bcc") or []],
                    )
                )
        with self._lock:
            self._state.requests.append(body)
            self._state.messages.extend(recorded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default="SG.bench")
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args()
    fake = FakeSendGrid(
        args.api_key,
        validate=not args.no_validate,
        record_content=not args.no_validate,
        port=args.port,
    ).start()
    print(f"listening on {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
