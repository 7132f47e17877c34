"""Signed links from an appointment email to its reschedule or cancel page.

A token seals the action and the appointment (sponsor id, appointment id) under
``TRACKING_SECRET``, like the tracking tokens: nothing in it can be forged or
pointed at another appointment, and a secret rotation keeps links already sent
working. It names the appointment, not a revision: a link from the confirmation
still opens the page after a reschedule, which then shows the appointment as it
now is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from service.settings import Settings
from service.tracking.tokens import Kind, TokenSigner

# One byte of kind, twelve of tag around the payload (service.tracking.tokens).
_FRAME = 1 + 12
_SEPARATOR = b"\0"


class Action(StrEnum):
    RESCHEDULE = "reschedule"
    CANCEL = "cancel"


_CODES = {Action.RESCHEDULE: b"r", Action.CANCEL: b"c"}
_ACTIONS = {code: action for action, code in _CODES.items()}


@dataclass(frozen=True, slots=True)
class LinkClaims:
    action: Action
    sponsor_id: str
    appointment_id: str


@dataclass(frozen=True, slots=True)
class Links:
    """Makes and reads the links; ``base_url`` is ``PUBLIC_BASE_URL``."""

    signer: TokenSigner
    base_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Links:
        return cls(settings.tracking_signer(), settings.public_base_url.rstrip("/"))

    def url(self, action: Action, sponsor_id: str, appointment_id: str) -> str:
        payload = _CODES[action] + sponsor_id.encode() + _SEPARATOR + appointment_id.encode()
        return f"{self.base_url}/a/{self.signer.seal(Kind.APPOINTMENT, payload)}"

    def read(self, token: str) -> LinkClaims | None:
        """The claims of a genuine appointment token; None for anything else."""
        # Unpadded base64: the decoded length follows from the token's length.
        size = len(token) * 3 // 4 - _FRAME
        if size < 3 or len(token) > 1000:
            return None
        payload = self.signer.unseal(token, Kind.APPOINTMENT, size)
        if payload is None or payload[:1] not in _ACTIONS:
            return None
        sponsor, _, appointment = payload[1:].partition(_SEPARATOR)
        try:
            return LinkClaims(_ACTIONS[payload[:1]], sponsor.decode(), appointment.decode())
        except UnicodeDecodeError:
            return None
