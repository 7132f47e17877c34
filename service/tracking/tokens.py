"""Signed, compact tokens that name a delivery (and a link position for clicks).

A token is ``base64url(kind | delivery_id | position | tag)`` where ``tag`` is
HMAC-SHA256 over the first bytes under ``TRACKING_SECRET``, truncated to 96
bits. Nothing in it can be guessed or enumerated without the secret; checks
run in constant time; during a rotation the previous secret still verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

_BODY = struct.Struct(">cQH")  # kind, delivery id, link position
_TAG_BYTES = 12


class Kind(Enum):
    OPEN = b"o"
    CLICK = b"c"
    UNSUBSCRIBE = b"u"
    VIEW = b"v"
    REPORT = b"r"
    TYPE_REPORT = b"t"  # a message type's report page
    # A transactional message's pixel and links: its id is a UUID, so these are
    # sealed tokens (``seal_message``), longer than a delivery's.
    MESSAGE_OPEN = b"m"
    MESSAGE_CLICK = b"k"
    # An appointment email's reschedule and cancel links (``service.appointments.links``).
    APPOINTMENT = b"a"
    PREFERENCES = b"p"


@dataclass(frozen=True, slots=True)
class PreparedTokens:
    """(kind byte, packed position) of each token to sign for one delivery."""

    parts: tuple[tuple[bytes, bytes], ...]


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_TOKEN_CHARS = 31


@dataclass(frozen=True, slots=True)
class TokenClaims:
    kind: Kind
    delivery_id: int
    position: int


def _keyed_pads(key: bytes) -> tuple[Any, Any]:
    """The inner and outer SHA-256 states of HMAC for ``key``; copying them is cheaper than
    keying a new HMAC for every token (this runs several times per recipient)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


class TokenSigner:
    """Signs with the current secret; verifies with the current or the previous one."""

    def __init__(self, secret: bytes, previous: bytes | None = None) -> None:
        if len(secret) < 16:
            raise ValueError("TRACKING_SECRET must be at least 16 bytes")
        self._pads = [_keyed_pads(key) for key in (secret, previous) if key]

    def _tag(self, index: int, body: bytes) -> bytes:
        """HMAC-SHA256(key, body) truncated, from hash states keyed once (RFC 2104)."""
        inner, outer = self._pads[index]
        inner = inner.copy()
        inner.update(body)
        outer = outer.copy()
        outer.update(inner.digest())
        tag: bytes = outer.digest()[:_TAG_BYTES]
        return tag

    def sign(self, kind: Kind, delivery_id: int, position: int = 0) -> str:
        body = _BODY.pack(kind.value, delivery_id, position)
        raw = body + self._tag(0, body)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @staticmethod
    def prepare(requests: Sequence[tuple[Kind, int]]) -> PreparedTokens:
        """The constant part of several tokens, to sign for many deliveries."""
        return PreparedTokens(
            tuple((kind.value, position.to_bytes(2, "big")) for kind, position in requests)
        )

    def sign_prepared(self, delivery_id: int, prepared: PreparedTokens) -> list[str]:
        """Tokens for one delivery, equal to ``sign`` for each (kind, position), in order.

        The per-recipient hot path: the hash states are keyed once per signer,
        and all tokens are base64-encoded and made URL-safe in one pass.
        """
        inner_pad, outer_pad = self._pads[0]
        delivery = delivery_id.to_bytes(8, "big")
        encoded: list[bytes] = []
        append = encoded.append
        b64 = binascii.b2a_base64
        for kind, position in prepared.parts:
            body = kind + delivery + position
            inner = inner_pad.copy()
            inner.update(body)
            outer = outer_pad.copy()
            outer.update(inner.digest())
            append(b64(body + outer.digest()[:_TAG_BYTES], newline=False))
        # Each token is 23 bytes: 32 base64 characters, the last one "=" padding.
        text = b"".join(encoded).translate(_URLSAFE).decode()
        return [text[i : i + _TOKEN_CHARS] for i in range(0, len(text), _TOKEN_CHARS + 1)]

    def sign_many(self, delivery_id: int, requests: Sequence[tuple[Kind, int]]) -> list[str]:
        """Tokens for several (kind, position) pairs of one delivery, in order."""
        return self.sign_prepared(delivery_id, self.prepare(requests))

    def verify(self, token: str, kind: Kind) -> TokenClaims | None:
        """The claims of a genuine token of ``kind``; None for anything else."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _BODY.size + _TAG_BYTES:
            return None
        body, tag = raw[: _BODY.size], raw[_BODY.size :]
        if not any(hmac.compare_digest(tag, self._tag(i, body)) for i in range(len(self._pads))):
            return None
        raw_kind, delivery_id, position = _BODY.unpack(body)
        if raw_kind != kind.value:
            return None
        return TokenClaims(kind=kind, delivery_id=delivery_id, position=position)

    def seal(self, kind: Kind, payload: bytes) -> str:
        """A token carrying ``payload`` of any length under the same HMAC as the others
        (report share links carry a campaign id and an expiry)."""
        body = kind.value + payload
        return base64.urlsafe_b64encode(body + self._tag(0, body)).rstrip(b"=").decode()

    def seal_message(self, kind: Kind, message_id: uuid.UUID, position: int = 0) -> str:
        """A message's pixel (``MESSAGE_OPEN``) or link (``MESSAGE_CLICK``) token."""
        return self.seal(kind, message_id.bytes + position.to_bytes(2, "big"))

    def unseal_message(self, token: str, kind: Kind) -> tuple[uuid.UUID, int] | None:
        """(message id, link position) of a genuine message token of ``kind``."""
        payload = self.unseal(token, kind, 18)
        if payload is None:
            return None
        return uuid.UUID(bytes=payload[:16]), int.from_bytes(payload[16:], "big")

    def unseal(self, token: str, kind: Kind, size: int) -> bytes | None:
        """The ``size``-byte payload of a genuine sealed token of ``kind``; None otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != 1 + size + _TAG_BYTES or raw[:1] != kind.value:
            return None
        body, tag = raw[: 1 + size], raw[1 + size :]
        if not any(hmac.compare_digest(tag, self._tag(i, body)) for i in range(len(self._pads))):
            return None
        return body[1:]

    def unseal_any(self, token: str, kind: Kind) -> bytes | None:
        """The payload, of whatever length, of a genuine sealed token of ``kind``; None
        otherwise (preference links carry a sponsor id and an address)."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= 1 + _TAG_BYTES or raw[:1] != kind.value:
            return None
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not any(hmac.compare_digest(tag, self._tag(i, body)) for i in range(len(self._pads))):
            return None
        return body[1:]
