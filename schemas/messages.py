"""Contracts of transactional messages (one-to-one emails): types, sending, ``messages.v1``.

An attachment carries its shape only. Whether a file is acceptable, and for which
provider, is decided in one place, ``service.messages.attachments.check_attachments``,
so every refusal there has a stable code (``invalid_attachment``,
``attachment_too_large``) instead of the generic ``validation_error``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from schemas.events import _Event
from schemas.http import Body
from schemas.preferences import PreferenceCategory


class AttachmentIn(Body):
    """A file sent with a message; with ``content_id`` it is shown inline in the HTML."""

    # The max_length bounds here only cap what is parsed: the limits a provider sets
    # are checked by ``check_attachments``, which refuses with their stable codes.
    filename: str = Field(
        max_length=1000,
        description="the name the recipient sees: no path, no line break, at most 255 characters",
        examples=["invoice-2026-12.pdf"],
    )
    content_type: str = Field(
        max_length=1000,
        description='the MIME type, "type/subtype" without parameters',
        examples=["application/pdf"],
    )
    content: str = Field(
        max_length=60_000_000, description="the file's bytes, base64 (standard alphabet, padded)"
    )
    content_id: str | None = Field(
        default=None,
        max_length=1000,
        description='makes the file inline: the HTML shows it as <img src="cid:CONTENT_ID">',
        examples=["logo"],
    )


# Message types ------------------------------------------------------------------

MessageCategory = Literal["transactional", "notification", "marketing"]
VariableType = Literal["string", "number", "boolean", "list", "object"]
MessageStatus = Literal[
    "scheduled",
    "queued",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "failed",
    "suppressed",
    # Waiting for a digest: the recipient chose daily or weekly for its category.
    "held",
    # Held, then told in the recipient's digest (``docs/digests.md``): never sent on its own.
    "digested",
    "bounced",
    "complained",
    "cancelled",
]

_KEY = r"^[a-z0-9][a-z0-9_.-]{0,199}$"
_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# The earliest an appointment reminder may be sent: 30 days before.
MAX_REMINDER_MINUTES = 30 * 24 * 60


class VariableIn(Body):
    """A variable a message type's template reads as ``{{ attributes.NAME }}``."""

    name: str = Field(pattern=_NAME, examples=["lead_name"])
    type: VariableType = "string"
    required: bool = True
    # Used when the variable is not required and a message does not give it.
    fallback: Any = None


# A MIME type, or a whole top-level type (``image/*``).
_MIME_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/(\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})$"
)


class AttachmentRulesIn(Body):
    """What a message of the type may attach, on top of the provider's own limits."""

    allowed: bool = Field(default=True, description="false: its messages take no attachment")
    max_count: int = Field(default=20, ge=1, le=20)
    max_bytes: int | None = Field(
        default=None, ge=1, description="the attachments' decoded bytes together, at most"
    )
    content_types: list[Annotated[str, Field(pattern=_MIME_PATTERN, max_length=255)]] | None = (
        Field(
            default=None,
            min_length=1,
            max_length=50,
            description="the MIME types allowed (`image/*` allows every image); omitted: any",
            examples=[["application/pdf", "image/*"]],
        )
    )


class MessageTypeIn(Body):
    """A kind of one-to-one message; its template is validated like a template's at save.

    With ``template_id``, the subject and bodies are those of a template of the
    library (its ``template_version``, or its latest version at each send), and
    any given here are replaced by them.
    """

    key: str = Field(pattern=_KEY, examples=["lead.qualified.alert"])
    category: MessageCategory = "transactional"
    preference_category: PreferenceCategory | None = Field(
        default=None,
        description="the recipient preference its messages follow; omitted: marketing for "
        "marketing types, alerts for notifications, none (preferences do not apply) for "
        "transactional ones",
    )
    template_id: uuid.UUID | None = Field(
        default=None, description="a template of the sponsor's library to send"
    )
    template_version: int | None = Field(
        default=None, ge=1, description="the version pinned; omitted: the latest at each send"
    )
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    message_body: str | None = Field(default=None, max_length=200_000)
    html_body: str | None = Field(default=None, max_length=500_000)
    text_body: str | None = Field(default=None, max_length=200_000)
    variables: list[VariableIn] = Field(default_factory=list, max_length=50)
    from_name: str | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    default_recipients: list[Annotated[str, Field(max_length=320)]] = Field(
        default_factory=list, max_length=50
    )
    reminder_offsets: list[Annotated[int, Field(ge=5, le=MAX_REMINDER_MINUTES)]] | None = Field(
        default=None,
        min_length=1,
        max_length=5,
        description="appointment.reminder only: minutes before the start each reminder is sent "
        "(distinct; default 1440 and 60)",
        examples=[[1440, 60]],
    )
    attachment_rules: AttachmentRulesIn | None = Field(
        default=None, description="what its messages may attach; omitted: the provider's limits"
    )


class StarterTypesIn(Body):
    """Which starter types to install (all when omitted), and who the team is."""

    keys: list[Annotated[str, Field(pattern=_KEY)]] | None = Field(
        default=None, max_length=20, examples=[["order.confirmation", "payment.failed"]]
    )
    team: list[Annotated[str, Field(max_length=320)]] = Field(
        default_factory=list,
        max_length=20,
        description="the default recipients of the team's types (conversation.summary.team)",
        examples=[["sales@sponsor.example"]],
    )


class MessageTypeOut(BaseModel):
    id: uuid.UUID
    key: str
    category: MessageCategory
    preference_category: PreferenceCategory | None
    template_id: uuid.UUID | None
    template_version: int | None
    subject: str
    message_body: str | None
    html_body: str | None
    text_body: str | None
    variables: list[VariableIn]
    from_name: str | None
    reply_to: str | None
    default_recipients: list[str]
    reminder_offsets: list[int] | None = None
    attachment_rules: AttachmentRulesIn | None = None
    created_at: datetime
    updated_at: datetime


# Sending ------------------------------------------------------------------------


class InlineTemplateIn(Body):
    """A one-off message's own template, instead of a type's: checked at the request
    like a type's (sandbox, links), with no declared variables (the data is read as
    given, as ``attributes.*``)."""

    subject: str = Field(min_length=1, max_length=998)
    message_body: str | None = Field(default=None, max_length=200_000)
    html_body: str | None = Field(default=None, max_length=500_000)
    text_body: str | None = Field(default=None, max_length=200_000)
    category: MessageCategory = "transactional"


class MessageIn(Body):
    """One message of a sending request: of a ``type``, or with its own ``template``."""

    type: str | None = Field(default=None, pattern=_KEY, description="the key of a message type")
    template: InlineTemplateIn | None = Field(
        default=None, description="a one-off template instead of a type"
    )
    to: str | None = Field(
        default=None,
        max_length=320,
        description="the recipient; omitted: one message to each of the type's default recipients",
    )
    data: dict[str, Any] = Field(default_factory=dict, description="the type's variables")
    cc: list[Annotated[str, Field(max_length=320)]] = Field(
        default_factory=list, max_length=50, description="copies, shown to every recipient"
    )
    bcc: list[Annotated[str, Field(max_length=320)]] = Field(
        default_factory=list, max_length=50, description="blind copies, in no header"
    )
    reply_to: str | None = Field(default=None, max_length=320)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)
    send_at: AwareDatetime | None = Field(
        default=None,
        description="when to send (RFC 3339 with an offset), up to 30 days ahead; "
        "a time already past sends now",
        examples=["2026-12-24T09:00:00+01:00"],
    )
    tags: dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=256)]] = (
        Field(default_factory=dict, max_length=10)
    )


class MessagesIn(Body):
    """Up to 100 messages sent together (one request, one transaction)."""

    messages: list[MessageIn] = Field(min_length=1, max_length=100)


class MessagesAccepted(BaseModel):
    """The ids of the messages queued, in request order."""

    ids: list[uuid.UUID]


class MessageOut(BaseModel):
    id: uuid.UUID
    type: str | None = Field(description="the type's key; null for a one-off template")
    to: str
    cc: list[str]
    bcc: list[str]
    status: MessageStatus
    tags: dict[str, str]
    provider_message_id: str | None
    last_error: str | None
    created_at: datetime
    send_at: datetime | None
    sent_at: datetime | None
    updated_at: datetime


class MessageHistoryEntry(BaseModel):
    """One thing that happened to a message: ``scheduled`` and ``cancelled`` (with
    ``send_at``), ``queued``, ``sent`` (with the provider's
    id), ``failed``/``suppressed`` (with the error), then its events (``delivered``,
    ``opened``, ``clicked``, ``bounced``, ``complained``, ``delivery_delayed``, …)."""

    type: str
    at: datetime
    provider_message_id: str | None = None
    error: str | None = None
    machine: bool = False  # an open or click from a proxy or a link scanner
    source: str | None = None  # ``tracking`` (our pixel, our redirect) or the provider
    url: str | None = None  # a click's target


class MessageDetailOut(MessageOut):
    """One message with what happened to it, oldest first."""

    history: list[MessageHistoryEntry]


class MessageTypeFigures(BaseModel):
    """A message type's figures (opened, clicked: a person's, not a machine's) and rates
    in percent (null when the denominator is 0), as campaign stats compute them."""

    key: str
    category: str
    messages: int
    queued: int
    sent: int
    delivered: int
    bounced: int
    complained: int
    failed: int
    suppressed: int
    opened: int
    clicked: int
    delivery_rate: float | None
    bounce_rate: float | None
    open_rate: float | None
    click_rate: float | None
    click_to_open_rate: float | None
    complaint_rate: float | None


class MessageTypeStatsOut(MessageTypeFigures):
    """One type's figures, its clicks per link and, if asked, its timeline."""

    type_id: uuid.UUID
    links: list[dict[str, Any]]
    timeline: list[dict[str, Any]] | None = None


class MessageTypeFiguresRow(MessageTypeFigures):
    type_id: uuid.UUID | None
    # None for a platform-wide type: its figures over every sponsor (admins see them).
    sponsor_id: str | None


class AnalystMessageTypesOut(BaseModel):
    items: list[MessageTypeFiguresRow]
    totals: dict[str, int | float | None]


# Kafka --------------------------------------------------------------------------


class MessageRequested(_Event):
    """A message to send (``messages.v1``, key: message id); the row holds the rest."""

    type: Literal["message.requested"] = "message.requested"
    message_id: uuid.UUID
    sponsor_id: str
    # Retries already spent on ``message.retry`` timers (0: the first sending).
    attempt: int = Field(default=0, ge=0)
