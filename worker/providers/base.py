"""The one interface every email provider implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from service.messages.attachments import Attachment


# Not frozen: built once per recipient, and a frozen dataclass's __init__ costs
# about three times as much. Treat an instance as read-only once built.
@dataclass(slots=True)
class OutgoingEmail:
    """One rendered message for one recipient."""

    delivery_id: int
    campaign_id: str
    sender: str  # RFC 5322: formataddr's "Name <address>" (quoted or encoded) or a bare address
    to: str
    subject: str
    html: str = ""
    text: str = ""
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # ``html``/``text`` already encoded as JSON string literals (UTF-8, quotes
    # included), for providers that set ``accepts_json_parts``; the str is then "".
    html_json: bytes | None = None
    text_json: bytes | None = None
    # Sent as the provider template ``template_id`` filled with ``variables``
    # (``TemplateProvider``) instead of ``html``/``text``, which are then "".
    template_id: str | None = None
    variables: dict[str, str | int] | None = None
    # The template's (html, text) with its ``{{{KEY}}}`` slots, beside ``template_id``:
    # for providers that fill the slots in themselves (Mailgun's recipient variables).
    template_parts: tuple[str, str] | None = None
    # ``sender``'s display name and address as they are (no quoting, no encoding),
    # for providers whose API wants ``from`` in a form of their own.
    sender_name: str = ""
    sender_address: str = ""
    # Campaign messages carry none; a provider whose bulk endpoint cannot carry
    # them sends such a message on its own (see each adapter).
    attachments: tuple[Attachment, ...] = ()
    # Copies of a transactional message (bare addresses). ``bcc`` goes to the
    # envelope or the provider's bcc field only, never into a header a recipient sees.
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()


@dataclass(slots=True)  # not frozen, as OutgoingEmail
class SendResult:
    """What the provider said about one message of a batch.

    Exactly one of ``provider_message_id`` and ``error`` is set: an error means
    the provider rejected that recipient for good (the batch itself went through).
    """

    delivery_id: int
    provider_message_id: str | None = None
    error: str | None = None


class EmailProvider(Protocol):
    """Sends batches of up to ``PROVIDER_BATCH_SIZE`` messages.

    ``send_batch`` raises ``service.errors.TransientProviderError`` (retry the
    same batch with the same key), ``PermanentProviderError`` (the whole batch
    is refused) or returns one ``SendResult`` per email, in order. Sending the
    same emails with the same ``idempotency_key`` twice must not send twice.

    A provider that sends JSON may set ``accepts_json_parts = True``: the
    sender then hands it bodies already encoded (``OutgoingEmail.html_json``).
    One whose batch request carries a body per email, without attachments, and
    sends nothing twice for a replayed key may set ``batches_messages = True``:
    transactional messages then share requests (``worker.delivery.message_sends``).
    """

    name: str

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], idempotency_key: str
    ) -> list[SendResult]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TemplateProvider(Protocol):
    """A provider that keeps templates: a campaign's body is stored once, and each
    message then carries only its variables (``OutgoingEmail.template_id``).

    Templates use ``{{{KEY}}}`` for a variable, inserted as given. Both calls
    raise ``service.errors.ProviderError`` subclasses as ``send_batch`` does.
    """

    async def create_template(self, name: str, html: str, text: str, keys: Sequence[str]) -> str:
        """Store and publish a template; its id."""
        ...

    async def remove_template(self, template_id: str) -> None: ...


@runtime_checkable
class StoredTemplateProvider(Protocol):
    """A ``TemplateProvider`` whose templates live at the provider until deleted
    (Resend), with a limit on the length of each variable's value.

    The caller records a template before it exists (``on_created`` gets its id
    before it is published), so none is left behind unknown, and decides per
    campaign that no value can pass ``max_variable_chars``.
    """

    max_variable_chars: int

    async def create_template(
        self,
        name: str,
        html: str,
        text: str,
        keys: Sequence[str],
        on_created: Callable[[str], Awaitable[None]] | None = None,
    ) -> str: ...

    async def remove_template(self, template_id: str) -> None: ...
