"""Transactional messages: the types a sponsor declares, each message sent, idempotency keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


class MessageType(Base):
    """A kind of one-to-one message (``lead.qualified.alert``): its template and variables.

    A type without a sponsor is platform-wide (an admin's): a sponsor sending its
    key gets it unless the sponsor has a type of that key itself.
    """

    __tablename__ = "message_types"
    __table_args__ = (
        UniqueConstraint("sponsor_id", "key", name="uq_message_types_sponsor_key"),
        Index(
            "uq_message_types_platform_key",
            "key",
            unique=True,
            postgresql_where=text("sponsor_id IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    sponsor_id: Mapped[str | None] = mapped_column(ForeignKey("sponsors.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(20))
    # The recipient preference its messages follow (``marketing``, ``alerts`` …); None: none.
    preference_category: Mapped[str | None] = mapped_column(String(20))
    # Made from a template of the library: the subject and bodies below are a copy
    # of its version at save; ``template_version`` None sends its latest version.
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("templates.id", ondelete="SET NULL")
    )
    template_version: Mapped[int | None] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(Text)
    message_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column(Text)
    # [{"name", "type", "required", "fallback"}], as ``schemas.messages.VariableIn``.
    variables: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'"))
    from_name: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    default_recipients: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    # ``appointment.reminder`` only: minutes before the start; None is the default (24 h, 1 h).
    reminder_offsets: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    # As ``schemas.messages.AttachmentRulesIn``; NULL: only the provider's limits.
    attachment_rules: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Message(Base):
    """One message to one address; its status moves once out of ``queued``
    (a ``scheduled`` one first becomes ``queued`` at its time, or ``cancelled``)."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_sponsor_created", "sponsor_id", "created_at", "id"),
        Index("ix_messages_type_created", "type_id", "created_at"),
        Index("ix_messages_created", "created_at"),  # for retention
        # Held messages wait for a digest, read per sponsor in order.
        Index(
            "ix_messages_held",
            "sponsor_id",
            "created_at",
            "id",
            postgresql_where=text("status = 'held'"),
        ),
        # The members of a claimed provider batch, while they wait to be sent.
        Index(
            "ix_messages_send_batch",
            "send_batch",
            postgresql_where=text("status = 'queued' AND send_batch IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(ForeignKey("sponsors.id", ondelete="CASCADE"))
    # Both None for a message with its own ``template`` (a one-off send).
    type_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("message_types.id", ondelete="CASCADE")
    )
    type_key: Mapped[str | None] = mapped_column(String(200))
    # A one-off message's template, as checked at the request: ``subject``,
    # ``message_body``, ``html_body``, ``text_body``, ``category``.
    template: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    to_email: Mapped[str] = mapped_column(String(320))
    # Copies of this recipient's message, normalized and apart from ``to_email`` and each other.
    cc: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    bcc: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    # As received ([{"filename", "content_type", "content" (base64), "content_id"}]):
    # checked at the API, decoded again by the sender.
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'"))
    tags: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'"))
    status: Mapped[str] = mapped_column(String(20), server_default=text("'queued'"))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    # The provider batch request it was claimed into (its idempotency key), before
    # the request; None while unclaimed or sent on its own.
    send_batch: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    # Set for a message sent later: ``scheduled`` until its timer queues it.
    send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()
    # The targets of its tracked links, by position, as it was sent.
    links: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'"))
    # First times its events set (opens and clicks: a person's, not a machine's).
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    clicked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    bounced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    complained_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MessageEvent(Base):
    """What happened to a message after sending: our pixel and redirect, provider webhooks."""

    __tablename__ = "message_events"
    __table_args__ = (
        Index("ix_message_events_message", "message_id", "occurred_at"),
        Index("ix_message_events_type_time", "type_id", "occurred_at"),
    )

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    type_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    link_position: Mapped[int | None] = mapped_column(Integer)
    is_machine: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    ip_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    recorded_at: Mapped[datetime] = _now()


class MessageIdempotencyKey(Base):
    """An ``Idempotency-Key`` a sending request used: its body's hash and the ids it got."""

    __tablename__ = "message_idempotency_keys"
    __table_args__ = (Index("ix_message_idempotency_keys_created", "created_at"),)  # retention

    sponsor_id: Mapped[str] = mapped_column(
        ForeignKey("sponsors.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_hash: Mapped[bytes] = mapped_column(LargeBinary)
    message_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    created_at: Mapped[datetime] = _now()
