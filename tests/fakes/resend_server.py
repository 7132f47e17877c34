"""A fake Resend HTTP API (``/emails``, ``/emails/batch``, ``/templates``) that follows the spec.

Built from ``tests/specs/resend``: request bodies are validated against the
OpenAPI schemas in ``resend.yaml``, error bodies use the ``{statusCode, name,
message}`` shape and the names and messages of ``errors.json``, idempotency and
rate-limit behaviour follow ``api-facts.json``.

In a test::

    with FakeResend() as fake:              # serves from a thread
        provider = ResendProvider("re_test", fake.url)
        ...
        assert len(fake.messages_to("a@example.com")) == 1

As a process, for benchmarks (prints ``listening on http://...`` once ready)::

    python -m tests.fakes.resend_server --port 8025 [--no-validate] [--rate-limit 10]

and read the counts from ``GET /_fake/stats``; ``POST /_fake/reset`` clears them.

The HTTP/1.1 server is the fake's own (``asyncio`` and ``httptools``, keep-alive,
one request at a time per connection): the email routes are answered directly,
the templates and the fake's own routes go to a Starlette app. Under uvicorn,
copying each 4 MB batch body chunk by chunk and the protocol layers cost about
a quarter of the fake's CPU, which the benchmarks share with the service.

Behaviour worth knowing:

* Auth: ``Authorization: Bearer re_...`` (or exactly ``api_key`` when one is
  given). No header: 401 ``missing_api_key``; anything else: 403 ``invalid_api_key``.
  ``set_restricted_key(True)``: the key may only send, as a sending-access key;
  the template routes answer 401 ``restricted_api_key``.
  ``set_verified_domains({...})``: a request with an email whose ``from`` is on
  another domain is refused whole, 403 ``validation_error`` (domain not verified).
* ``from``: ``address`` or ``Name <address>`` with the name as it is; a name
  as an RFC 2047 encoded word (``=?utf-8?...?=``) or a quoted string is 422
  ``validation_error`` (invalid ``from``), as Resend has been reported to answer.
* Validation: schema errors and the fake's own checks (an address without ``@``
  in ``from``/``to``, no ``html``/``text``/``template`` or ``html``/``text``
  with a ``template``, the template checks below, tag names or values
  outside ``[A-Za-z0-9_-]{1,256}``, attachments in a batch, more than 100
  emails; on ``POST /emails`` an attachment without ``content`` or ``path``
  (``invalid_attachment``), a ``content`` that is not base64, or attachments
  over ``MAX_ATTACHMENTS_BASE64`` (40 MB after base64) in all) answer 422.
  Accepted attachments are recorded as sent (``RecordedMessage.attachments``).
  ``x-batch-validation: permissive`` sends the valid emails
  and lists the others in ``errors: [{index, message}]``; ``data`` then holds
  the ids of the created emails only, in request order (as Resend documents).
  ``validate=False`` skips only the (slower) schema check. Without
  ``record_content``, a batch's ``html``/``text`` strings are checked (JSON
  escapes, UTF-8) but never built into Python strings.
* Idempotency (``Idempotency-Key``, 1-256 chars, scoped to method + path, kept
  ``idempotency_ttl`` seconds): same key and body replays the stored answer and
  records no message; a different body is 409 ``invalid_idempotent_request``;
  a key whose first request is still running is 409
  ``concurrent_idempotent_requests``. Bodies are compared as sent (their bytes:
  the same emails with keys in another order are a different body). Only 2xx
  answers are stored, so a request refused with 4xx/5xx can be retried with its key.
* ``GET /emails/{id}`` shows an accepted email (its html/text as filled in,
  with ``record_content``; ``last_event`` is always ``delivered``).
* Templates: ``POST /templates`` creates a draft, ``POST /templates/{id}/publish``
  publishes it, ``GET``/``DELETE /templates/{id}`` read and delete it (unknown
  ids: 404). Creating one refuses (422) more than 50 variables, a key declared
  twice or reserved, and a ``{{{KEY}}}`` in html/text/subject whose key is not
  declared. An email with ``template: {id, variables}`` needs a published
  template and a string or number for every variable without a fallback;
  a string value longer than ``MAX_TEMPLATE_VALUE`` (2,000) characters is 422. With
  ``record_content`` its html/text are the template's with each ``{{{KEY}}}``
  replaced, unescaped, by its value or fallback; nothing else is rendered.
  These routes are rate-limited, authorized, faulted and recorded like the
  email routes, but take no idempotency key.
* Rate limit: ``rate_limit`` requests/second as a token bucket holding one
  second's worth (so a burst of ``rate_limit`` passes); over it, 429
  ``rate_limit_exceeded`` with ``retry-after``. Refused requests use no token.
  Every answer carries ``ratelimit-limit``/``-remaining``/``-reset``; with no
  limit they advertise ``UNLIMITED_ADVERTISED`` requests per second.
* Faults, checked in this order after the rate limit: ``set_hang(True)`` stalls
  every request until ``set_hang(False)`` (then it is served normally, like a
  slow server) or ``stop()`` (503); ``fail_for(seconds, status)`` answers
  ``status`` to everything for a while; ``fail_next(n, status)`` answers the
  next ``n`` requests with ``status``; ``set_latency(s)`` delays every request
  that gets past those, while its idempotency key is held.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import gc
import http
import json
import logging
import math
import os
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote

import httptools
import jsonschema
import msgspec
import orjson
import xxhash
import yaml
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from worker.allocator import tune_allocator

__all__ = [
    "MAX_ATTACHMENTS_BASE64",
    "MAX_BATCH",
    "MAX_TEMPLATE_VALUE",
    "MAX_TEMPLATE_VARIABLES",
    "UNLIMITED_ADVERTISED",
    "FakeResend",
    "RecordedMessage",
    "RecordedRequest",
    "RecordedTemplate",
    "load_spec",
    "request_schema",
]

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs" / "resend"
MAX_BATCH = 100
MAX_TEMPLATE_VARIABLES = 50
# Characters a template variable's string value may hold.
MAX_TEMPLATE_VALUE = 2000
MAX_IDEMPOTENCY_KEY = 256
# api-facts.json ``attachments_limit``: "40 MB per email after Base64 encoding".
MAX_ATTACHMENTS_BASE64 = 40 * 2**20
UNLIMITED_ADVERTISED = 1000
_NEVER = 2**31 - 1  # the largest collection threshold the gc module takes
IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0

_TAG_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
# A template variable as Resend fills it in: triple braces, mustache's unescaped form.
_VARIABLE_RE = re.compile(r"\{\{\{([A-Za-z0-9_]+)\}\}\}")
# Keys Resend keeps for its own values (contact fields, the unsubscribe link) and mustache's.
_RESERVED_VARIABLES = frozenset(
    ("FIRST_NAME", "LAST_NAME", "EMAIL", "UNSUBSCRIBE_URL", "contact", "this")
)
_ADDRESS_HINT = (
    "The email address needs to follow the `email@example.com` "
    "or `Name <email@example.com>` format."
)
_JSON = "application/json; charset=utf-8"
_API_PATHS = frozenset((b"/emails", b"/emails/batch"))
_log = logging.getLogger(__name__)
# Seconds ``stop()`` lets requests in flight finish before closing their connections.
_GRACE_SECONDS = 2.0
# Bytes read at a time up to the end of a request's headers.
_READ_SIZE = 65536
# The status each injected fault uses when no error name is given.
_DEFAULT_ERROR_NAMES = {
    400: "validation_error",
    401: "missing_api_key",
    403: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    409: "concurrent_idempotent_requests",
    422: "validation_error",
    429: "rate_limit_exceeded",
    500: "application_error",
    503: "service_unavailable",
}


# --------------------------------------------------------------------------- spec


@functools.cache
def load_spec() -> dict[str, Any]:
    """``resend.yaml`` parsed once per process."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (SPEC_DIR / "resend.yaml").open(encoding="utf-8") as fh:
        spec: dict[str, Any] = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
    return spec


@functools.cache
def _error_messages() -> dict[str, str]:
    with (SPEC_DIR / "errors.json").open(encoding="utf-8") as fh:
        doc = json.load(fh)
    messages: dict[str, str] = {"invalid_api_key": "API key is invalid."}
    for entry in doc["error_codes_current"]:
        messages.setdefault(entry["name"], entry["message"])
    return messages


def _inline_refs(node: Any, spec: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every local ``$ref`` replaced by its target (no cycles allowed)."""
    if isinstance(node, list):
        return [_inline_refs(item, spec, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"cannot inline $ref {ref!r}")
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        resolved = _inline_refs(target, spec, (*seen, ref))
        siblings = {k: _inline_refs(v, spec, seen) for k, v in node.items() if k != "$ref"}
        return {"allOf": [resolved, siblings]} if siblings else resolved
    return {key: _inline_refs(value, spec, seen) for key, value in node.items()}


@functools.cache
def request_schema(path: str) -> dict[str, Any]:
    """The spec's JSON request schema for ``POST path``, ``#/components`` refs inlined."""
    spec = load_spec()
    body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    schema: dict[str, Any] = _inline_refs(body["schema"], spec)
    return schema


Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {"$comment", "title", "description", "example", "examples", "default", "deprecated",
     "readOnly", "writeOnly", "format", "contentEncoding", "contentMediaType"}
)  # fmt: skip


def _is_integer(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and float(value).is_integer())


# Exact type checks (bool is not a number in JSON Schema; bodies come from orjson).
_TYPE_CHECKS: dict[str, Check] = {
    "string": lambda value: type(value) is str,
    "object": lambda value: type(value) is dict,
    "array": lambda value: type(value) is list,
    "boolean": lambda value: type(value) is bool,
    "null": lambda value: value is None,
    "integer": _is_integer,
    "number": lambda value: type(value) is int or type(value) is float,
}


def _all(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]

    def check_all(value: Any) -> bool:
        for check in checks:  # noqa: SIM110 - a loop: no generator on the hot path
            if not check(value):
                return False
        return True

    return check_all


def _any(checks: list[Check]) -> Check:
    def check_any(value: Any) -> bool:
        for check in checks:  # noqa: SIM110 - a loop: no generator on the hot path
            if check(value):
                return True
        return False

    return check_any


def _one(checks: list[Check]) -> Check:
    def check_one(value: Any) -> bool:
        passed = 0
        for check in checks:
            if check(value):
                passed += 1
        return passed == 1

    return check_one


def _compile(schema: Any) -> Check | None:
    """A predicate equal to ``jsonschema`` validity, or None for a keyword it lacks.

    Covers what the request schemas use (type, required, properties,
    additionalProperties, items, minItems, maxItems, oneOf, anyOf, allOf);
    annotations such as ``format`` do not assert under draft 2020-12.
    """
    if schema is True or schema == {}:
        return lambda value: True
    if schema is False:
        return lambda value: False
    if not isinstance(schema, dict):
        return None
    checks: list[Check] = []
    for keyword, arg in schema.items():
        check = _compile_keyword(keyword, arg, schema)
        if check is None:
            if keyword in _ANNOTATIONS:
                continue
            return None
        checks.append(check)
    return _all(checks) if checks else (lambda value: True)


def _compile_subs(schemas: list[Any]) -> list[Check] | None:
    subs = [_compile(sub) for sub in schemas]
    return None if any(sub is None for sub in subs) else [sub for sub in subs if sub]


def _compile_keyword(keyword: str, arg: Any, schema: dict[str, Any]) -> Check | None:
    if keyword == "type":
        names = [arg] if isinstance(arg, str) else list(arg)
        if not all(name in _TYPE_CHECKS for name in names):
            return None
        return (
            _any([_TYPE_CHECKS[name] for name in names])
            if len(names) > 1
            else _TYPE_CHECKS[names[0]]
        )
    if keyword == "required":
        keys = tuple(arg)
        return lambda value: type(value) is not dict or all(k in value for k in keys)
    if keyword == "properties":
        compiled = _compile_subs(list(arg.values()))
        if compiled is None:
            return None
        pairs = list(zip(arg, compiled, strict=True))

        def check_properties(value: Any) -> bool:
            if type(value) is dict:
                for name, check in pairs:
                    if name in value and not check(value[name]):
                        return False
            return True

        return check_properties
    if keyword == "additionalProperties":
        extra = _compile(arg)
        if extra is None or "patternProperties" in schema:
            return None
        known = frozenset(schema.get("properties", ()))
        return lambda value: (
            type(value) is not dict or all(extra(v) for k, v in value.items() if k not in known)
        )
    if keyword == "items":
        item = _compile(arg)
        if item is None or "prefixItems" in schema:
            return None
        return lambda value: type(value) is not list or all(item(v) for v in value)
    if keyword == "minItems":
        low = int(arg)
        return lambda value: type(value) is not list or len(value) >= low
    if keyword == "maxItems":
        high = int(arg)
        return lambda value: type(value) is not list or len(value) <= high
    if keyword in ("oneOf", "anyOf", "allOf"):
        branches = _compile_subs(arg)
        if branches is None:
            return None
        return {"oneOf": _one, "anyOf": _any, "allOf": _all}[keyword](branches)
    return None


class _SchemaValidator:
    """Validates a request body (or one email of a batch) against a request schema.

    jsonschema costs ~0.3 ms per email, too slow for 100-email batches at
    150 requests/s, so a predicate compiled from the same schema (``_compile``,
    ~10 us) decides; jsonschema has the last word on what the predicate refuses,
    and words the message. A schema the compiler cannot handle goes to
    jsonschema alone.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        cls = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
        self._validator = cls(schema)
        self._fast = _compile(schema)

    def error(self, body: Any) -> tuple[str, str] | None:
        """``(error name, message)`` for an invalid body, else None."""
        if self._fast is not None and self._fast(body):
            return None
        best = jsonschema.exceptions.best_match(self._validator.iter_errors(body))
        if best is None:
            return None
        if best.validator == "required":
            missing = [p for p in best.validator_value if p not in best.instance]
            return "missing_required_field", f"Missing `{missing[0] if missing else '?'}` field."
        where = ".".join(str(p) for p in best.absolute_path) or "body"
        return "validation_error", f"Invalid `{where}` field: {best.message}"


@functools.cache
def _email_validator() -> _SchemaValidator:
    """``SendEmailRequest``, the batch schema's items."""
    return _SchemaValidator(request_schema("/emails/batch")["items"])


@functools.cache
def _template_validator() -> _SchemaValidator:
    """``CreateTemplateRequest``; its ``enum`` leaves it to jsonschema alone (not a hot path)."""
    return _SchemaValidator(request_schema("/templates"))


# A batch as emails of undecoded values (msgspec.Raw), each then decoded on its own.
_BATCH_DECODER = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])
_BODY_FIELDS = frozenset(("html", "text"))
_QUOTE = ord('"')  # the first byte of a JSON string


def _decode(raw: bytes | bytearray, skip_bodies: bool) -> Any:
    """The request's JSON, checked in full; with ``skip_bodies``, a batch's html/text
    strings are checked but not built: each comes as "" (the schema asks only for a
    string), since building 4 MB of them per batch was most of the fake's CPU.
    A batch that cannot hold such a string (no ``"html"`` or ``"text"`` in it,
    as when every email names a template) is decoded in one piece: field by
    field cost three times as much.

    Raises ``ValueError`` for malformed JSON or UTF-8.
    """
    if skip_bodies and (b'"html"' in raw or b'"text"' in raw):
        try:
            emails = _BATCH_DECODER.decode(raw)
        except msgspec.ValidationError:
            pass  # JSON of another shape, refused with the usual words by ``_accept``
        else:
            check_utf8 = not raw.isascii()  # ASCII is UTF-8, and far quicker to tell
            return [
                {name: _skipped(name, value, check_utf8) for name, value in email.items()}
                for email in emails
            ]
    return orjson.loads(raw)


def _skipped(name: str, value: msgspec.Raw, check_utf8: bool) -> Any:
    """A body string as "" (its UTF-8 checked when ``check_utf8``), any other value decoded."""
    if name in _BODY_FIELDS and memoryview(value)[0] == _QUOTE:
        if check_utf8:
            # msgspec checks the escapes of a string it skips, not its UTF-8 (it does
            # check the strings it decodes). String by string: decoding the whole
            # body in one piece built a 4 MB string, about 1,000 freshly faulted
            # pages per request, and cost 7 times as much.
            str(value, "utf-8")
        return ""
    return msgspec.json.decode(value)


def _bare_address(value: str) -> str:
    value = value.strip()
    if value.endswith(">") and "<" in value:
        value = value[value.rindex("<") + 1 : -1]
    return value.strip().lower()


def _addresses(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        for v in value:  # a loop: no generator on the hot path
            if not isinstance(v, str):
                return None
        return list(value)
    return None


def _is_tag(value: str) -> bool:
    """Whether ``_TAG_RE`` matches all of ``value``; letters and digits alone (ids, most
    names) are told without the regex: ASCII ``isalnum`` is exactly [A-Za-z0-9]."""
    if len(value) <= 256 and value.isascii() and value.isalnum():
        return True
    return _TAG_RE.fullmatch(value) is not None


def _semantic_error(email: dict[str, Any], batch: bool) -> tuple[str, str] | None:
    """What the real API checks beyond the schema (cheap, so always on)."""
    sender = email.get("from")
    if not isinstance(sender, str):
        return "missing_required_field", "Missing `from` field."
    # Two substring tests, not a regex: this runs for every email.
    if "@" not in sender or "=?" in sender or sender.lstrip().startswith('"'):
        return "validation_error", f"Invalid `from` field. {_ADDRESS_HINT}"
    if "to" not in email:
        return "missing_required_field", "Missing `to` field."
    to = _addresses(email["to"])
    if not to:
        return "validation_error", "Invalid `to` field."
    if len(to) > 50:
        return "validation_error", "Invalid `to` field: at most 50 recipients."
    for address in to:
        if "@" not in address:
            return "validation_error", f"Invalid `to` field. {_ADDRESS_HINT}"
    for field_name in ("cc", "bcc"):
        if field_name in email:
            copies = _addresses(email[field_name])
            if copies is None or any("@" not in address for address in copies):
                return "validation_error", f"Invalid `{field_name}` field. {_ADDRESS_HINT}"
    if not isinstance(email.get("subject"), str):
        return "missing_required_field", "Missing `subject` field."
    # Plain ``in`` tests, not any() over a generator: this runs for every email.
    if "html" not in email and "text" not in email and "template" not in email:
        return "validation_error", "Missing `html` or `text` field."
    if "template" in email and ("html" in email or "text" in email):
        return "validation_error", "`html` and `text` cannot be used with `template`."
    tags = email.get("tags")
    if tags is not None:
        if not isinstance(tags, list):
            return "validation_error", "Invalid `tags` field."
        for tag in tags:
            if isinstance(tag, dict):
                name, value = tag.get("name"), tag.get("value", "")
            else:
                name = value = None
            if not isinstance(name, str) or not _is_tag(name):
                return "validation_error", "Invalid `tags` field: names use only A-Z a-z 0-9 _ -."
            if not isinstance(value, str) or (value and not _is_tag(value)):
                return "validation_error", "Invalid `tags` field: values use only A-Z a-z 0-9 _ -."
    if "attachments" in email:
        if batch:
            return "validation_error", "The `attachments` field is not supported yet."
        return _attachments_error(email["attachments"])
    return None


def _attachments_error(attachments: Any) -> tuple[str, str] | None:
    """A single email's attachments as Resend checks them (the schema checks their types)."""
    if not isinstance(attachments, list):
        return "validation_error", "Invalid `attachments` field."
    total = 0
    for i, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            return "validation_error", f"Invalid `attachments.{i}` field."
        content = attachment.get("content")
        if content is None and not attachment.get("path"):
            return "invalid_attachment", _error_messages()["invalid_attachment"]
        if isinstance(content, str):
            try:
                base64.b64decode(content, validate=True)
            except ValueError:
                return "validation_error", f"Invalid `attachments.{i}.content`: not base64."
            total += len(content)
    if total > MAX_ATTACHMENTS_BASE64:
        return "validation_error", "Attachments are limited to 40 MB per email after encoding."
    return None


def _template_use_error(
    template: Any, templates: Mapping[str, RecordedTemplate]
) -> tuple[str, str] | None:
    """What Resend checks of an email's ``template`` (one dict lookup, so always on)."""
    if not isinstance(template, dict) or not isinstance(template.get("id"), str):
        return "validation_error", "Invalid `template` field."
    template_id = template["id"]
    found = templates.get(template_id)
    if found is None:
        return "validation_error", f"Template `{template_id}` not found."
    if found.status != "published":
        return "validation_error", f"Template `{template_id}` is not published."
    variables = template.get("variables", {})
    if not isinstance(variables, dict):
        return "validation_error", "Invalid `template.variables` field."
    for key, value in variables.items():
        kind = type(value)
        if kind is not str and kind is not int and kind is not float:
            return (
                "validation_error",
                f"Invalid `template.variables.{key}`: not a string or number.",
            )
        if kind is str and len(value) > MAX_TEMPLATE_VALUE:
            return (
                "validation_error",
                f"Invalid `template.variables.{key}`: at most {MAX_TEMPLATE_VALUE} characters.",
            )
    for key in found.required:
        if key not in variables:
            return "validation_error", f"Missing `{key}` variable of template `{template_id}`."
    return None


def _new_template_error(body: Any) -> tuple[str, str] | None:
    """Resend's rules for a new template, beyond its schema (cheap, so always on)."""
    if not isinstance(body, dict):
        return "validation_error", "The request body must be a JSON object."
    for name in ("name", "html"):
        if name not in body:
            return "missing_required_field", f"Missing `{name}` field."
    for name in ("name", "html", "text", "subject"):
        if not isinstance(body.get(name, ""), str):
            return "validation_error", f"Invalid `{name}` field."
    variables = body.get("variables", [])
    if not isinstance(variables, list) or not all(
        isinstance(v, dict) and isinstance(v.get("key"), str) for v in variables
    ):
        return "validation_error", "Invalid `variables` field."
    if len(variables) > MAX_TEMPLATE_VARIABLES:
        return "validation_error", f"Too many variables: at most {MAX_TEMPLATE_VARIABLES}."
    declared: set[str] = set()
    for variable in variables:
        key = variable["key"]
        if key in _RESERVED_VARIABLES:
            return "validation_error", f"Variable '{key}' is reserved."
        if key in declared:
            return "validation_error", f"Variable '{key}' is defined more than once."
        declared.add(key)
    for part in (body["html"], body.get("text", ""), body.get("subject", "")):
        for key in _VARIABLE_RE.findall(part):
            if key not in declared:
                message = f"Variable '{key}' is used in the template but not defined"
                return "validation_error", f"{message} in the variables list"
    return None


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class RecordedMessage:
    """An email the fake accepted; treat as read-only (not frozen: cheaper to build).

    ``html``/``text``/``headers`` are empty without ``record_content``; an email
    sent with a template has the template's html/text, filled in.
    """

    id: str
    sender: str
    to: list[str]
    subject: str
    html: str | None
    text: str | None
    reply_to: str | list[str] | None
    headers: dict[str, str]
    tags: list[dict[str, str]]
    idempotency_key: str | None
    path: str
    created_at: float
    # As sent: filename, content (base64), content_type, content_id.
    attachments: list[dict[str, Any]] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)

    def tag(self, name: str) -> str | None:
        """The value of tag ``name``, if the email carried it."""
        for tag in self.tags:
            if tag.get("name") == name:
                return tag.get("value")
        return None


@dataclass(slots=True)
class RecordedRequest:
    """One answered API request; treat as read-only.

    ``timestamp`` is ``time.monotonic()`` at arrival; ``body`` is the parsed
    JSON (None without ``record_content``, or when it was refused before reading).
    """

    timestamp: float
    method: str
    path: str
    status: int
    idempotency_key: str | None
    batch_validation: str | None
    replayed: bool = False
    body: Any = None


@dataclass(frozen=True, slots=True)
class RecordedTemplate:
    """A template the fake holds; publishing it stores a published copy.

    ``variables`` are as ``GET /templates/{id}`` shows them; ``required`` are
    their keys with no fallback, which every email using the template must give.
    """

    id: str
    name: str
    alias: str | None
    sender: str | None
    subject: str | None
    reply_to: str | list[str] | None
    html: str
    text: str | None
    variables: list[dict[str, Any]]
    required: tuple[str, ...]
    status: str  # "draft" or "published"
    created_at: str
    updated_at: str
    published_at: str | None = None

    def render(self, given: Mapping[str, Any]) -> tuple[str, str | None]:
        """html and text with each ``{{{KEY}}}`` replaced, unescaped, by ``str()`` of
        its value in ``given``, else of its fallback, else by ""."""
        values = {
            v["key"]: str(v["fallback_value"])
            for v in self.variables
            if v["fallback_value"] is not None
        }
        values.update((key, str(value)) for key, value in given.items())

        def fill(match: re.Match[str]) -> str:
            return values.get(match[1], "")

        text = None if self.text is None else _VARIABLE_RE.sub(fill, self.text)
        return _VARIABLE_RE.sub(fill, self.html), text


def _template_resource(template: RecordedTemplate) -> dict[str, Any]:
    """``template`` as the spec's ``Template`` object."""
    return {
        "object": "template",
        "id": template.id,
        "name": template.name,
        "alias": template.alias,
        "from": template.sender,
        "subject": template.subject,
        "reply_to": template.reply_to,
        "html": template.html,
        "text": template.text,
        "variables": template.variables,
        "status": template.status,
        "created_at": template.created_at,
        "updated_at": template.updated_at,
        "published_at": template.published_at,
    }


def _bodies(
    email: dict[str, Any], templates: Mapping[str, RecordedTemplate]
) -> tuple[str | None, str | None]:
    """An accepted email's html and text: its own, or its template's filled in."""
    template = email.get("template")
    if template is None:
        return email.get("html"), email.get("text")
    return templates[template["id"]].render(template.get("variables", {}))


@dataclass(slots=True)
class _Fault:
    status: int
    retry_after: float | None
    error_name: str | None
    path: str  # the fault answers the first request whose path starts with this


@dataclass(slots=True)
class _IdempotencyEntry:
    fingerprint: bytes
    created_at: float
    done: bool = False
    status: int = 0
    body: bytes = b""


@dataclass(slots=True)
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


def _error(
    status: int, name: str | None = None, message: str | None = None, **headers: str
) -> _Answer:
    name = name or _DEFAULT_ERROR_NAMES.get(status, "application_error")
    message = message or _error_messages().get(name, "An unexpected error occurred.")
    body = orjson.dumps({"statusCode": status, "message": message, "name": name})
    return _Answer(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


# Byte maps that set a UUID's version (4) and variant (RFC 4122) bits.
_UUID_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_UUID_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


def _new_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs like Resend's ids, in one ``urandom`` call."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}"
        f"-{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    ]


def _fmt_seconds(seconds: float) -> str:
    return str(max(0, math.ceil(seconds)))


def _timestamp() -> str:
    """Now, as Resend writes its timestamps (``2023-10-06 23:47:56.678+00``)."""
    now = datetime.now(UTC)
    return f"{now:%Y-%m-%d %H:%M:%S}.{now.microsecond // 1000:03d}+00"


def _template_not_found() -> _Answer:
    return _error(404, "not_found", "Template not found")


# --------------------------------------------------------------------------- fake


class FakeResend:
    """State and handlers of the fake; thread-safe, so tests can poke it while it serves.

    Args:
        host, port: where ``start()`` listens; port 0 picks a free one.
        api_key: the only accepted key; None accepts any ``re_...`` key.
        validate: check bodies against the spec's schema (the cheap checks of
            ``_semantic_error`` and the template rules always run).
        rate_limit: requests per second, None for no limit.
        record_content: keep html/text/headers of messages and request bodies;
            turn off for long benchmarks.
        idempotency_ttl: seconds an idempotency key is remembered.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        validate: bool = True,
        rate_limit: float | None = None,
        record_content: bool = True,
        idempotency_ttl: float = IDEMPOTENCY_TTL_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.validate = validate
        self.record_content = record_content
        self.idempotency_ttl = idempotency_ttl
        self._lock = threading.Lock()
        self._rate_limit = rate_limit
        self._tokens = float(rate_limit or 0)
        self._refilled_at = time.monotonic()
        self._latency = 0.0
        self._hang = False
        self._restricted = False
        self._verified_domains: frozenset[str] | None = None
        self._stopping = False
        self._faults: deque[_Fault] = deque()
        self._fail_until = 0.0
        self._window_fault: _Fault | None = None
        self._messages: list[RecordedMessage] = []
        self._requests: list[RecordedRequest] = []
        self._replays = 0
        self._idempotency: dict[tuple[str, str, str], _IdempotencyEntry] = {}
        # Replaced under the lock, never changed in place: a request reads one
        # snapshot, without the lock, for checking its emails and rendering them.
        self._templates: dict[str, RecordedTemplate] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if validate:
            _email_validator()  # compile now, not on the first request
        # The templates and the fake's own routes; ``handle`` serves the email ones.
        api = self._template_route
        self.routes = Starlette(
            routes=[
                Route("/templates", api(self._create_template), methods=["POST"]),
                Route("/templates/{id}", api(self._get_template), methods=["GET"]),
                Route("/templates/{id}", api(self._delete_template), methods=["DELETE"]),
                Route("/templates/{id}/publish", api(self._publish_template), methods=["POST"]),
                Route("/emails/{id}", api(self._get_email), methods=["GET"]),
                Route("/_fake/stats", self._stats_endpoint, methods=["GET"]),
                Route("/_fake/messages", self._messages_endpoint, methods=["GET"]),
                Route("/_fake/reset", self._reset_endpoint, methods=["POST"]),
            ],
            exception_handlers={HTTPException: self._http_exception},
        )

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL to give the SDK as ``api_url`` (valid once started)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeResend:
        """Serve in a daemon thread; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._stopping = False
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        runner = asyncio.Runner()
        self._server = server = _Server(self, runner.get_loop())
        ready = threading.Event()

        def serve() -> None:
            with runner:
                runner.run(server.serve(sock, ready.set))

        self._thread = threading.Thread(target=serve, name="fake-resend", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("fake Resend server did not start")
        return self

    async def serve(self, sock: socket.socket) -> None:
        """Serve on ``sock`` from the running loop until SIGINT or SIGTERM (as a process)."""
        loop = asyncio.get_running_loop()
        self._server = server = _Server(self, loop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop)
        await server.serve(sock, lambda: None)

    def stop(self) -> None:
        """Stop serving; hung requests are released with a 503."""
        self._stopping = True
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeResend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- faults

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: float | None = None,
        error_name: str | None = None,
        path: str = "/emails",
    ) -> None:
        """Answer the next ``n`` API requests to ``path`` (a prefix: by default the
        email routes, not the template ones) with ``status``, queued after earlier calls.

        ``error_name`` defaults to the usual name for the status (429:
        ``rate_limit_exceeded``; use ``daily_quota_exceeded`` for quota). A
        ``retry-after`` header is sent only when ``retry_after`` is given.
        """
        with self._lock:
            self._faults.extend(_Fault(status, retry_after, error_name, path) for _ in range(n))

    def fail_for(
        self,
        seconds: float,
        status: int = 503,
        retry_after: float | None = None,
        error_name: str | None = None,
    ) -> None:
        """Answer every API request with ``status`` for the next ``seconds``.

        A 429 without ``retry_after`` says the time left in the window.
        """
        with self._lock:
            self._fail_until = time.monotonic() + seconds
            self._window_fault = _Fault(status, retry_after, error_name, "/")

    def set_latency(self, seconds: float) -> None:
        """Delay every request that gets past the faults by ``seconds``."""
        with self._lock:
            self._latency = max(0.0, seconds)

    def set_hang(self, enabled: bool = True) -> None:
        """Stall requests (never answer) until disabled or stopped."""
        with self._lock:
            self._hang = enabled

    def set_restricted_key(self, enabled: bool = True) -> None:
        """Serve the key as a sending-access one: templates answer 401 ``restricted_api_key``."""
        with self._lock:
            self._restricted = enabled

    def set_verified_domains(self, domains: Iterable[str] | None) -> None:
        """Send only from these domains (None: from any); others are 403, domain not verified."""
        with self._lock:
            self._verified_domains = (
                None if domains is None else frozenset(d.lower() for d in domains)
            )

    def set_rate_limit(self, per_second: float | None) -> None:
        """Allow ``per_second`` requests per second (None: no limit); refills the bucket."""
        with self._lock:
            self._rate_limit = per_second
            self._tokens = float(per_second or 0)
            self._refilled_at = time.monotonic()

    def reset(self) -> None:
        """Forget messages, requests, replays, idempotency keys, templates and every fault."""
        with self._lock:
            self._templates = {}
            self._messages.clear()
            self._requests.clear()
            self._replays = 0
            self._idempotency.clear()
            self._faults.clear()
            self._fail_until = 0.0
            self._window_fault = None
            self._latency = 0.0
            self._hang = False
            self._restricted = False
            self._verified_domains = None
            self._tokens = float(self._rate_limit or 0)
            self._refilled_at = time.monotonic()

    # ----------------------------------------------------------------- records

    @property
    def messages(self) -> list[RecordedMessage]:
        """Accepted emails, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Answered API requests, in the order they were answered (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def templates(self) -> dict[str, RecordedTemplate]:
        """Templates by id, created and not deleted (a copy)."""
        with self._lock:
            return dict(self._templates)

    @property
    def replays(self) -> int:
        """How many requests were answered from the idempotency store."""
        with self._lock:
            return self._replays

    def messages_to(self, address: str) -> list[RecordedMessage]:
        """Accepted emails with ``address`` among their ``to`` (case-insensitive)."""
        wanted = _bare_address(address)
        with self._lock:
            return [m for m in self._messages if wanted in (_bare_address(a) for a in m.to)]

    def stats(self) -> dict[str, Any]:
        """Counts, as served by ``GET /_fake/stats``."""
        with self._lock:
            statuses: dict[str, int] = {}
            for r in self._requests:
                statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
            return {
                "messages": len(self._messages),
                "requests": len(self._requests),
                "replays": self._replays,
                "statuses": statuses,
            }

    # ----------------------------------------------------------------- HTTP

    async def handle(
        self, path: str, headers: dict[str, str], raw: bytearray, arrived: float
    ) -> tuple[_Answer, dict[str, str]]:
        """The answer to ``POST path`` (an email route) and its rate-limit headers.

        ``headers`` has lower-case names; ``arrived`` is ``time.monotonic()``
        when the request began.
        """
        key = headers.get("idempotency-key")
        mode = headers.get("x-batch-validation")
        record = RecordedRequest(arrived, "POST", path, 0, key, mode)
        return await self._metered(
            record, headers.get("authorization"), lambda: self._serve(raw, path, key, mode)
        )

    async def _metered(
        self,
        record: RecordedRequest,
        authorization: str | None,
        serve: Callable[[], Awaitable[tuple[_Answer, Any]]],
    ) -> tuple[_Answer, dict[str, str]]:
        """``serve``'s answer once past the rate limit, auth and faults, and the
        rate-limit headers; ``record`` is filled in and recorded either way."""
        rate_headers, retry_after = self._take_token(record.timestamp)
        answer: _Answer | None
        if retry_after is not None:
            answer = _error(429, "rate_limit_exceeded", retry_after=_fmt_seconds(retry_after))
        else:
            answer = await self._gate(authorization, record.path)
        if answer is None:
            answer, body = await serve()
            if self.record_content:
                record.body = body
        record.status = answer.status
        record.replayed = answer.replayed
        with self._lock:
            self._requests.append(record)
        return answer, rate_headers

    async def _gate(self, authorization: str | None, path: str) -> _Answer | None:
        """The answer to a request refused by auth, a hang or a fault, else None."""
        auth = self._auth_error(authorization)
        if auth is not None:
            return auth
        if self._restricted and path.startswith("/templates"):
            return _error(401, "restricted_api_key")
        # Polled, not an asyncio.Event: tests flip the flag from their own thread.
        while self._hang and not self._stopping:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self._stopping:
            return _error(503)
        return self._next_fault(path)

    async def _serve(
        self, raw: bytearray, path: str, key: str | None, mode: str | None
    ) -> tuple[_Answer, Any]:
        try:
            body = _decode(raw, skip_bodies=path == "/emails/batch" and not self.record_content)
        except ValueError:  # malformed JSON or UTF-8
            return _error(400, "validation_error", "The request body is not valid JSON."), None
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            return _error(400, "invalid_idempotency_key"), body
        if mode is not None and mode not in ("strict", "permissive"):
            return _error(422, "validation_error", "Invalid `x-batch-validation` header."), body

        scope = ("POST", path, key) if key is not None else None
        if scope is not None:
            # The payload as sent: re-encoding a 4 MB batch canonically cost the fake
            # more CPU than the sender spent rendering it. xxh3 (128 bits, never
            # attacked here) takes 0.05 ms per 4 MB where sha256 took 2.3.
            fingerprint = xxhash.xxh3_128_digest(raw)
            claimed = self._claim(scope, fingerprint, arrived=time.monotonic())
            if claimed is not None:
                return claimed, body
        answer = _error(500)
        try:
            if self._latency:
                await asyncio.sleep(self._latency)
            answer = self._accept(path, body, key, permissive=mode == "permissive")
        finally:
            if scope is not None:
                self._settle(scope, answer)
        return answer, body

    def _auth_error(self, header: str | None) -> _Answer | None:
        if not header:
            return _error(401, "missing_api_key")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith("re_"):
            return _error(403, "invalid_api_key")
        if self.api_key is not None and token != self.api_key:
            return _error(403, "invalid_api_key")
        return None

    def _take_token(self, now: float) -> tuple[dict[str, str], float | None]:
        """Rate-limit headers, and the seconds to wait if this request is refused."""
        with self._lock:
            rate = self._rate_limit
            if rate is None or rate <= 0:
                limit = str(UNLIMITED_ADVERTISED)
                return {"ratelimit-limit": limit, "ratelimit-remaining": limit,
                        "ratelimit-reset": "1"}, None  # fmt: skip
            capacity = max(1.0, rate)
            self._tokens = min(capacity, self._tokens + (now - self._refilled_at) * rate)
            self._refilled_at = now
            wait: float | None = None
            if self._tokens >= 1.0:
                self._tokens -= 1.0
            else:
                wait = max(1.0, (1.0 - self._tokens) / rate)
            headers = {
                "ratelimit-limit": _fmt_seconds(capacity),
                "ratelimit-remaining": str(int(self._tokens)),
                "ratelimit-reset": _fmt_seconds((capacity - self._tokens) / rate),
                "ratelimit-policy": f"{_fmt_seconds(capacity)};w=1",
            }
            return headers, wait

    def _next_fault(self, path: str) -> _Answer | None:
        if not self._faults and self._window_fault is None:
            return None  # none queued and no window: no need for the lock and the clock
        with self._lock:
            now = time.monotonic()
            queued = next((f for f in self._faults if path.startswith(f.path)), None)
            if self._window_fault is not None and now < self._fail_until:
                fault = self._window_fault
                retry_after = fault.retry_after
                if retry_after is None and fault.status == 429:
                    retry_after = self._fail_until - now
            elif queued is not None:
                fault = queued
                self._faults.remove(fault)
                retry_after = fault.retry_after
            else:
                return None
        extra = {} if retry_after is None else {"retry_after": _fmt_seconds(retry_after)}
        return _error(fault.status, fault.error_name, **extra)

    def _claim(
        self, scope: tuple[str, str, str], fingerprint: bytes, arrived: float
    ) -> _Answer | None:
        """Take the key for this request, or the answer it gets instead."""
        with self._lock:
            entry = self._idempotency.get(scope)
            if entry is not None and arrived - entry.created_at > self.idempotency_ttl:
                entry = None
            if entry is None:
                self._idempotency[scope] = _IdempotencyEntry(fingerprint, arrived)
                return None
            if not entry.done:
                return _error(409, "concurrent_idempotent_requests")
            if entry.fingerprint != fingerprint:
                return _error(409, "invalid_idempotent_request")
            self._replays += 1
            return _Answer(entry.status, entry.body, replayed=True)

    def _settle(self, scope: tuple[str, str, str], answer: _Answer) -> None:
        with self._lock:
            if 200 <= answer.status < 300:
                entry = self._idempotency[scope]
                entry.done, entry.status, entry.body = True, answer.status, answer.body
            else:
                self._idempotency.pop(scope, None)

    def _email_error(
        self, email: Any, batch: bool, templates: Mapping[str, RecordedTemplate]
    ) -> tuple[str, str] | None:
        if not isinstance(email, dict):
            return "validation_error", "Each email must be a JSON object."
        if self.validate:
            found = _email_validator().error(email)
            if found is not None:
                return found
        found = _semantic_error(email, batch)
        if found is not None or "template" not in email:
            return found
        return _template_use_error(email["template"], templates)

    def _unverified_domain(self, emails: list[Any]) -> _Answer | None:
        """The 403 for a request sending from a domain the account has not verified."""
        verified = self._verified_domains
        if verified is None:
            return None
        for email in emails:
            sender = email.get("from") if isinstance(email, dict) else None
            if isinstance(sender, str):
                domain = _bare_address(sender).rpartition("@")[2]
                if domain not in verified:
                    message = (
                        f"The `{domain}` domain is not verified. "
                        "Please, add and verify your domain."
                    )
                    return _error(403, "validation_error", message)
        return None

    def _accept(self, path: str, body: Any, key: str | None, permissive: bool) -> _Answer:
        """Validate and record; the answer for a request past every fault."""
        templates = self._templates
        if path == "/emails":
            found = self._email_error(body, batch=False, templates=templates)
            if found is not None:
                return _error(422, *found)
            unverified = self._unverified_domain([body])
            if unverified is not None:
                return unverified
            (message_id,) = self._record([body], key, path, templates)
            return _Answer(200, orjson.dumps({"id": message_id}))

        if not isinstance(body, list):
            return _error(422, "validation_error", "The request body must be an array of emails.")
        if len(body) > MAX_BATCH:
            return _error(422, "validation_error", f"Too many emails: at most {MAX_BATCH}.")
        unverified = self._unverified_domain(body)
        if unverified is not None:
            return unverified
        errors: list[dict[str, Any]] = []
        for index, email in enumerate(body):
            found = self._email_error(email, batch=True, templates=templates)
            if found is None:
                continue
            if not permissive:
                name, message = found
                return _error(422, name, f"emails[{index}]: {message}")
            errors.append({"index": index, "message": found[1]})
        accepted = body  # ``_record`` only reads it: no copy when every email passed
        if errors:
            failed = {e["index"] for e in errors}
            accepted = [e for i, e in enumerate(body) if i not in failed]
        ids = self._record(accepted, key, path, templates)
        answer: dict[str, Any] = {"data": [{"id": i} for i in ids]}
        if permissive:
            answer["errors"] = errors
        return _Answer(200, orjson.dumps(answer))

    def _record(
        self,
        emails: list[dict[str, Any]],
        key: str | None,
        path: str,
        templates: Mapping[str, RecordedTemplate],
    ) -> list[str]:
        now = time.time()
        ids = _new_ids(len(emails))
        content = self.record_content
        bodies = (
            [_bodies(email, templates) for email in emails]
            if content
            else [(None, None)] * len(emails)
        )
        # Positional arguments in the fields' order (id, sender, to, subject, html, text,
        # reply_to, headers, tags, idempotency_key, path, created_at, attachments): half
        # the cost of keywords, for every message.
        records = [
            RecordedMessage(
                message_id,
                email["from"],
                _addresses(email["to"]) or [],
                email["subject"],
                html,
                text,
                email.get("reply_to"),
                dict(email.get("headers") or {}) if content else {},
                list(email.get("tags") or []),
                key,
                path,
                now,
                list(email.get("attachments") or ()),
                _addresses(email.get("cc")) or [],
                _addresses(email.get("bcc")) or [],
            )
            for email, message_id, (html, text) in zip(emails, ids, bodies, strict=True)
        ]
        with self._lock:
            self._messages.extend(records)
        return ids

    def _template_route(
        self, serve: Callable[[Request], Awaitable[tuple[_Answer, Any]]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint answering with ``serve``, metered and delayed like the email routes."""

        async def endpoint(request: Request) -> Response:
            path = request.url.path
            record = RecordedRequest(time.monotonic(), request.method, path, 0, None, None)

            async def served() -> tuple[_Answer, Any]:
                if self._latency:
                    await asyncio.sleep(self._latency)
                return await serve(request)

            answer, rate_headers = await self._metered(
                record, request.headers.get("authorization"), served
            )
            headers = {"content-type": _JSON, **rate_headers, **answer.headers}
            return Response(answer.body, answer.status, headers)

        return endpoint

    async def _create_template(self, request: Request) -> tuple[_Answer, Any]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "validation_error", "The request body is not valid JSON."), None
        found = _template_validator().error(body) if self.validate else None
        found = found or _new_template_error(body)
        if found is not None:
            return _error(422, *found), body
        now = _timestamp()
        given = body.get("variables", [])
        template_id, *variable_ids = _new_ids(1 + len(given))
        variables = [
            {"id": variable_id, "key": v["key"], "type": v.get("type"),
             "fallback_value": v.get("fallback_value"), "created_at": now, "updated_at": now}
            for variable_id, v in zip(variable_ids, given, strict=True)
        ]  # fmt: skip
        template = RecordedTemplate(
            id=template_id,
            name=body["name"],
            alias=body.get("alias"),
            sender=body.get("from"),
            subject=body.get("subject"),
            reply_to=body.get("reply_to"),
            html=body["html"],
            text=body.get("text"),
            variables=variables,
            required=tuple(v["key"] for v in variables if v["fallback_value"] is None),
            status="draft",
            created_at=now,
            updated_at=now,
        )
        with self._lock:
            self._templates = {**self._templates, template_id: template}
        return _Answer(200, orjson.dumps({"id": template_id, "object": "template"})), body

    async def _publish_template(self, request: Request) -> tuple[_Answer, Any]:
        template_id: str = request.path_params["id"]
        with self._lock:
            template = self._templates.get(template_id)
            if template is not None:
                now = _timestamp()
                published = replace(template, status="published", updated_at=now, published_at=now)
                self._templates = {**self._templates, template_id: published}
        if template is None:
            return _template_not_found(), None
        return _Answer(200, orjson.dumps({"id": template_id, "object": "template"})), None

    async def _delete_template(self, request: Request) -> tuple[_Answer, Any]:
        template_id: str = request.path_params["id"]
        with self._lock:
            templates = dict(self._templates)
            deleted = templates.pop(template_id, None)
            self._templates = templates
        if deleted is None:
            return _template_not_found(), None
        answer = {"object": "template", "id": template_id, "deleted": True}
        return _Answer(200, orjson.dumps(answer)), None

    async def _get_template(self, request: Request) -> tuple[_Answer, Any]:
        template = self._templates.get(request.path_params["id"])
        if template is None:
            return _template_not_found(), None
        return _Answer(200, orjson.dumps(_template_resource(template))), None

    async def _get_email(self, request: Request) -> tuple[_Answer, Any]:
        wanted = request.path_params["id"]
        with self._lock:
            found = next((m for m in self._messages if m.id == wanted), None)
        if found is None:
            return _error(404, "not_found", "Email not found"), None
        resource = {
            "object": "email",
            "id": found.id,
            "to": found.to,
            "from": found.sender,
            "created_at": datetime.fromtimestamp(found.created_at, UTC).isoformat(),
            "subject": found.subject,
            "html": found.html,
            "text": found.text,
            "bcc": None,
            "cc": None,
            "reply_to": found.reply_to,
            "last_event": "delivered",
        }
        return _Answer(200, orjson.dumps(resource)), None

    async def _stats_endpoint(self, request: Request) -> Response:
        return Response(orjson.dumps(self.stats()), media_type="application/json")

    async def _messages_endpoint(self, request: Request) -> Response:
        to = request.query_params.get("to")
        found = self.messages_to(to) if to else self.messages
        rows = [
            {"id": m.id, "to": m.to, "subject": m.subject, "tags": m.tags,
             "idempotency_key": m.idempotency_key, "created_at": m.created_at}
            for m in found
        ]  # fmt: skip
        return Response(orjson.dumps(rows), media_type="application/json")

    async def _reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return Response(orjson.dumps({"ok": True}), media_type="application/json")

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        answer = _error(status)
        return Response(answer.body, status_code=status, headers={"content-type": _JSON})


# --------------------------------------------------------------------------- HTTP


@dataclass(slots=True)
class _Request:
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytearray
    keep_alive: bool
    arrived: float


class _Server:
    """Serves ``fake`` on a listening socket from ``loop``; ``shutdown`` from any thread."""

    def __init__(self, fake: FakeResend, loop: asyncio.AbstractEventLoop) -> None:
        self.fake = fake
        self.loop = loop
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._stop = asyncio.Event()

    async def serve(self, sock: socket.socket, ready: Callable[[], None]) -> None:
        """Serve until ``shutdown``; requests in flight then get ``_GRACE_SECONDS`` to finish."""
        listener = await self.loop.create_server(lambda: _Connection(self), sock=sock)
        ready()
        await self._stop.wait()
        self.stopping = True
        listener.close()
        busy = [c.task for c in self.connections if c.task is not None]
        for connection in list(self.connections):
            connection.close_if_idle()
        if busy:
            await asyncio.wait(busy, timeout=_GRACE_SECONDS)
        for connection in list(self.connections):
            connection.close()

    def shutdown(self) -> None:
        """Ask ``serve`` to stop (thread-safe; also before the loop runs)."""
        self.loop.call_soon_threadsafe(self._stop.set)

    async def answer(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body for one request."""
        raw_path, _, query = request.url.partition(b"?")
        if raw_path not in _API_PATHS:
            return await self._delegate(request, raw_path, query)
        if request.method != b"POST":
            answer, rate_headers = _error(405), dict[str, str]()
        else:
            headers: dict[str, str] = {}
            for name, value in request.headers:
                headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
            answer, rate_headers = await self.fake.handle(
                raw_path.decode("latin-1"), headers, request.body, request.arrived
            )
        fields = [("content-type", _JSON), *rate_headers.items(), *answer.headers.items()]
        return answer.status, fields, answer.body

    async def _delegate(
        self, request: _Request, raw_path: bytes, query: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The fake's own routes, through the smallest ASGI bridge Starlette needs."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method.decode("latin-1"),
            "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "server": (self.fake.host, self.fake.port),
            "client": None,
        }
        messages = deque[Message](
            [{"type": "http.request", "body": bytes(request.body), "more_body": False}]
        )
        status = 500
        fields: list[tuple[str, str]] = []
        body = bytearray()

        async def receive() -> Message:
            return messages.popleft() if messages else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                fields.extend(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in message.get("headers", ())
                    if name.lower() != b"content-length"
                )
            else:
                body.extend(message.get("body", b""))

        await self.fake.routes(scope, receive, send)
        return status, fields, bytes(body)


class _Connection(asyncio.BufferedProtocol):
    """One client connection: HTTP/1.1 parsed by ``httptools``, answered in order.

    A request's body is gathered into one buffer sized from its
    ``content-length``: once the parser has seen the headers, the socket is
    read straight into that buffer (one kernel copy, and as few reads as the
    socket allows), and the next request gets a fresh parser. Each answer is
    written in one call.
    """

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._scratch = memoryview(bytearray(_READ_SIZE))
        self._transport: asyncio.Transport | None = None
        self._pending: deque[_Request | None] = deque()  # None: a malformed request
        self.task: asyncio.Task[None] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()
        self._filled = 0
        self._direct = False  # reading the body straight into ``_body``
        self._in_body = False
        self._method = b""
        self._keep_alive = True
        self._arrived = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._direct:
            return memoryview(self._body)[self._filled :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            self._filled += nbytes
            if self._filled == len(self._body):
                self._direct = False
                self._parser = httptools.HttpRequestParser(self)  # it saw part of this body
                self.on_message_complete()
            return
        try:
            self._parser.feed_data(self._scratch[:nbytes])
        except httptools.HttpParserError:
            self._queue(None)
            return
        # Mid-way through a body of known length: read the rest straight into it.
        self._direct = self._in_body and 0 < len(self._body) != self._filled

    def close_if_idle(self) -> None:
        if self.task is None:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._arrived = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        length = next((v for n, v in self._headers if n == b"content-length"), b"")
        self._body = bytearray(int(length)) if length.isdigit() else bytearray()
        self._filled = 0
        self._in_body = True
        self._method = self._parser.get_method()
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        end = self._filled + len(body)
        if self._filled == len(self._body):  # chunked: no length to size it from
            self._body += body
        else:
            self._body[self._filled : end] = body
        self._filled = end

    def on_message_complete(self) -> None:
        self._in_body = False
        self._queue(
            _Request(
                method=self._method,
                url=self._url,
                headers=self._headers,
                body=self._body,
                keep_alive=self._keep_alive,
                arrived=self._arrived,
            )
        )

    def _queue(self, request: _Request | None) -> None:
        self._pending.append(request)
        if self.task is None:
            self.task = self._server.loop.create_task(self._answer_pending())

    async def _answer_pending(self) -> None:
        try:
            while self._pending:
                request = self._pending.popleft()
                if request is None:
                    status, fields, body = 400, [("content-type", "text/plain")], b"Bad request"
                else:
                    try:
                        status, fields, body = await self._server.answer(request)
                    except Exception:
                        _log.exception("fake Resend failed to answer %r", request.url)
                        status, fields, body = 500, [("content-type", _JSON)], _error(500).body
                close = request is None or not request.keep_alive or self._server.stopping
                self._write(status, fields, body, close)
                if close:
                    break
        finally:
            self.task = None

    def _write(
        self, status: int, fields: Iterable[tuple[str, str]], body: bytes, close: bool
    ) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines.extend(f"{name}: {value}" for name, value in fields)
        lines.append(f"content-length: {len(body)}")
        if close:
            lines.append("connection: close")
        lines.append("\r\n")
        transport.write("\r\n".join(lines).encode("latin-1") + body)
        if close:
            transport.close()


@functools.cache
def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening before the server runs lets clients connect (and queue) at once.
    sock.listen(2048)
    return sock


def main(argv: list[str] | None = None) -> None:
    """Run the fake in the foreground (``python -m tests.fakes.resend_server``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="only accept this key")
    parser.add_argument("--no-validate", action="store_true", help="skip schema validation")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument(
        "--record-content", action="store_true", help="keep html/text/headers and request bodies"
    )
    args = parser.parse_args(argv)
    fake = FakeResend(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        validate=not args.no_validate,
        rate_limit=args.rate_limit,
        record_content=args.record_content,
    )
    fake.set_latency(args.latency)
    # A benchmark keeps up to a million records until the process exits, and full
    # collections over them cost up to a third of the fake's CPU by 500,000
    # messages; those never become garbage, so only the young generations are
    # collected (a cycle that lives long enough to be old is left to the exit).
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER)
    # Each 4 MB batch body is read into a buffer of its own: as the workers do, keep
    # freed heap memory for the next one rather than map and fault it in anew.
    tune_allocator()
    sock = _bind(args.host, args.port)
    fake.port = sock.getsockname()[1]
    print(f"listening on {fake.url}", flush=True)  # the harness waits for this line
    asyncio.run(fake.serve(sock))


if __name__ == "__main__":
    main()
