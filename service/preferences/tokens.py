"""Preference links: a sealed token naming a sponsor, an address and, optionally, the
category of the message the link came from (``TokenSigner.seal``, ``Kind.PREFERENCES``).

A campaign email's link carries its delivery's unsubscribe token instead (already
signed per recipient): the page resolves it to the delivery's sponsor and address,
category ``marketing``. Either way the token is the whole authority, like an
unsubscribe link: no login.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.preferences import CATEGORIES, PreferenceCategory
from service.tracking.tokens import Kind, TokenSigner


@dataclass(frozen=True, slots=True)
class PreferenceClaims:
    sponsor_id: str
    email: str
    category: PreferenceCategory | None


def sign(signer: TokenSigner, sponsor_id: str, email: str, category: str | None) -> str:
    """A link's token; ``category`` is one of ``CATEGORIES`` (ValueError otherwise) or None."""
    index = 0 if category is None else CATEGORIES.index(category) + 1
    payload = bytes((index,)) + f"{sponsor_id}\n{email}".encode()
    return signer.seal(Kind.PREFERENCES, payload)


def read(signer: TokenSigner, token: str) -> PreferenceClaims | None:
    """The claims of a genuine preference token; None for anything else."""
    payload = signer.unseal_any(token, Kind.PREFERENCES)
    if payload is None or len(payload) < 4 or payload[0] > len(CATEGORIES):
        return None
    sponsor_id, _, email = payload[1:].decode(errors="replace").partition("\n")
    category = CATEGORIES[payload[0] - 1] if payload[0] else None
    return PreferenceClaims(sponsor_id, email, category)
