"""A transactional message's template compiled for sending, cached per type.

A type's template is compiled once per type and process, and again when the
type changes (``updated_at``) or, for a type that sends its template's latest
version, when that version changes. A one-off message's own template is cached
by its content and the sponsor's details it shows, the least recently used
dropped past ``_INLINE_CACHE``.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formataddr
from typing import Any

import orjson

from service.messages.types import content_of
from service.models import Message, MessageType, Sponsor, TemplateVersion
from service.templates import logic as template_logic
from service.templates.compiled import (
    CompiledMessage,
    ProviderTemplate,
    compile_message,
    single_line,
)
from service.templates.content import Content
from service.templates.urls import DeliveryUrls

_INLINE_CACHE = 256


@dataclass
class TypeContext:
    """A message type compiled for sending (``core.MessageContext``)."""

    tag: str
    sender: str
    reply_to: str | None
    message: CompiledMessage
    version: datetime
    category: str
    preference_category: str | None
    # The template version compiled, for a type that sends its template's latest.
    template_version: int | None = None
    # Messages go out whole: one message, nothing for a provider template to save.
    template: ProviderTemplate | None = field(default=None)
    template_id: str | None = field(default=None)
    # ``sender``'s parts as they are: a provider API may format ``from`` its own way.
    sender_name: str = ""
    sender_address: str = ""

    def headers(self, urls: DeliveryUrls) -> dict[str, str]:
        # A transactional message belongs to no list: no List-Unsubscribe. Any other
        # unsubscribes from its preference category only (RFC 8058 one-click).
        if self.preference_category is None or not urls.preferences:
            return {}
        return {
            "List-Unsubscribe": f"<{urls.unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }


class MessageContexts:
    """The compiled templates of one message sender."""

    def __init__(self) -> None:
        self._types: dict[uuid.UUID, TypeContext] = {}
        # One-off templates by their content and the sponsor's details they show:
        # an application sending many of the same one compiles it once.
        self._inline: OrderedDict[tuple[object, ...], TypeContext] = OrderedDict()

    def of(
        self,
        message: Message,
        message_type: MessageType | None,
        sponsor: Sponsor,
        latest: TemplateVersion | None = None,
    ) -> TypeContext:
        """The type compiled, from the cache while the type (and the latest version of
        its template, if it sends the latest) is unchanged; a one-off message's own
        template from a cache of its own."""
        if message_type is None:
            return self._inline_of(message.template or {}, sponsor)
        cached = self._types.get(message_type.id)
        version = latest.version if latest else None
        if (
            cached is not None
            and cached.version == message_type.updated_at
            and cached.template_version == version
        ):
            return cached
        content = content_of(message_type)
        if latest is not None:
            content = Content(
                latest.subject, latest.message_body, latest.html_body, latest.text_body
            )
        context = _compiled(
            sponsor,
            f"message:{message_type.key}",
            content,
            message_type.category,
            preference_category=message_type.preference_category,
            from_name=message_type.from_name,
            reply_to=message_type.reply_to,
            version=message_type.updated_at,
        )
        context.template_version = version
        self._types[message_type.id] = context
        return context

    def _inline_of(self, template: dict[str, Any], sponsor: Sponsor) -> TypeContext:
        key = (
            orjson.dumps(template, option=orjson.OPT_SORT_KEYS),
            sponsor.id,
            sponsor.name,
            sponsor.from_name,
            sponsor.from_email,
            sponsor.reply_to,
            sponsor.postal_address,
        )
        cached = self._inline.get(key)
        if cached is not None:
            self._inline.move_to_end(key)
            return cached
        content = Content(
            template["subject"],
            template.get("message_body"),
            template.get("html_body"),
            template.get("text_body"),
        )
        context = _compiled(sponsor, "message:inline", content, template["category"])
        self._inline[key] = context
        if len(self._inline) > _INLINE_CACHE:
            self._inline.popitem(last=False)
        return context


def _compiled(
    sponsor: Sponsor,
    tag: str,
    content: Content,
    category: str,
    *,
    preference_category: str | None = None,
    from_name: str | None = None,
    reply_to: str | None = None,
    version: datetime | None = None,
) -> TypeContext:
    """A message's template compiled, with the sender's name and reply-to (the
    type's, else the sponsor's)."""
    name = single_line(from_name or sponsor.from_name or "")
    address = single_line(sponsor.from_email)
    reply = reply_to or sponsor.reply_to
    return TypeContext(
        tag=tag,
        sender=formataddr((name, address)),
        sender_name=name,
        sender_address=address,
        reply_to=single_line(reply) if reply else None,
        message=compile_message(
            content,
            template_logic.brand_for(sponsor),
            preferences=preference_category is not None,
        ),
        version=version or datetime.min,
        category=category,
        preference_category=preference_category,
    )
