"""Signed share links to a campaign report: the campaign and an expiry, under ``TRACKING_SECRET``.

A link is for people (a sponsor opening it from a dashboard), not API clients:
whoever holds it sees that one campaign's report until it expires, without a
bearer token. The token is sealed like the tracking tokens, so nothing in it
can be forged or widened to another campaign, and a secret rotation keeps
links signed with the previous secret working.
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta

from service.tracking.tokens import Kind, TokenSigner

_PAYLOAD = struct.Struct(">16sI")  # campaign id, expiry (unix seconds)

DEFAULT_TTL = timedelta(days=7)
MAX_TTL = timedelta(days=30)


def sign(
    signer: TokenSigner, campaign_id: uuid.UUID, expires_at: datetime, kind: Kind = Kind.REPORT
) -> str:
    """A token that opens ``campaign_id``'s report until ``expires_at`` (whole seconds);
    ``Kind.TYPE_REPORT``: a message type's report, ``campaign_id`` the type's id."""
    return signer.seal(kind, _PAYLOAD.pack(campaign_id.bytes, int(expires_at.timestamp())))


def verify(
    signer: TokenSigner,
    token: str,
    campaign_id: uuid.UUID,
    now: datetime,
    kind: Kind = Kind.REPORT,
) -> bool:
    """Whether ``token`` is a genuine ``kind`` token, names ``campaign_id`` and has not
    expired at ``now`` (a campaign's link never opens a type's report, nor the reverse)."""
    payload = signer.unseal(token, kind, _PAYLOAD.size)
    if payload is None:
        return False
    raw_id, expires = _PAYLOAD.unpack(payload)
    return bool(raw_id == campaign_id.bytes and now.timestamp() < expires)


def expiry(now: datetime, ttl_seconds: int | None) -> datetime:
    """When a link made at ``now`` expires: the asked TTL (bounded by ``MAX_TTL`` in the
    request schema) or ``DEFAULT_TTL``, truncated to the second the token carries."""
    ttl = DEFAULT_TTL if ttl_seconds is None else timedelta(seconds=ttl_seconds)
    return (now + ttl).replace(microsecond=0).astimezone(UTC)
