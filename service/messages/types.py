"""Message type rules: the template is checked at save, like a template's, and may read
only the variables the type declares.

A type's template reads its data as ``{{ attributes.NAME }}``: the namespace a
campaign template reads a lead's custom attributes from, so the same sandbox,
validation and renderer serve both.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.messages import MessageTypeIn, VariableIn
from service.appointments.emails import REMINDER as REMINDER_TYPE
from service.errors import NotFound, Unprocessable
from service.leads.logic import normalize_email
from service.messages import repository
from service.models import MessageType
from service.templates import repository as templates
from service.templates.content import Content
from service.templates.sandbox import off_loop
from service.templates.validate import used_variables, validate

# The preference category a type follows when it names none; transactional: none.
DEFAULT_PREFERENCE: dict[str, str] = {"marketing": "marketing", "notification": "alerts"}

# Variables the service sets itself: a type's template may read them undeclared.
_SYSTEM_VARIABLES = frozenset(
    ("sponsor", "event", "unsubscribe_url", "view_in_browser_url", "preferences_url", "preferences")
)


def content_of(message_type: MessageType | MessageTypeIn) -> Content:
    return Content(
        message_type.subject or "",
        message_type.message_body,
        message_type.html_body,
        message_type.text_body,
    )


def _check_variables(variables: list[VariableIn], content: Content) -> None:
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise Unprocessable("duplicate_variable", "each variable is declared once", "variables")
    for i, variable in enumerate(variables):
        if variable.required and variable.fallback is not None:
            raise Unprocessable(
                "invalid_variable",
                f"'{variable.name}' is required: a fallback would never be used",
                f"variables.{i}.fallback",
            )
    undeclared = sorted(
        name
        for name in used_variables(content)
        if name.startswith("attributes.") and name.partition(".")[2] not in names
    )
    if undeclared:
        raise Unprocessable(
            "undeclared_template_variable",
            f"used but not declared: {', '.join(undeclared)}",
            "variables",
        )


def _addresses(addresses: list[str], field: str) -> list[str]:
    try:
        return [normalize_email(address) for address in addresses]
    except ValueError as exc:
        raise Unprocessable("invalid_email", str(exc), field) from None


async def check(body: MessageTypeIn) -> None:
    """422 naming the field of anything that must not be saved."""
    content = content_of(body)
    await off_loop(validate, content)
    _check_variables(body.variables, content)
    _addresses(body.default_recipients, "default_recipients")
    if body.reply_to:
        _addresses([body.reply_to], "reply_to")
    _check_reminder_offsets(body)


def _check_reminder_offsets(body: MessageTypeIn) -> None:
    offsets = body.reminder_offsets
    if offsets is None:
        return
    if body.key != REMINDER_TYPE:
        message = f"reminder offsets are for the {REMINDER_TYPE} type only"
        raise Unprocessable("invalid_reminder_offsets", message, "reminder_offsets")
    if len(set(offsets)) != len(offsets):
        message = "each reminder offset may be given once"
        raise Unprocessable("invalid_reminder_offsets", message, "reminder_offsets")


async def _resolved(
    session: AsyncSession, sponsor_id: str | None, body: MessageTypeIn
) -> MessageTypeIn:
    """``body`` with the subject and bodies of its template's version, if it names one."""
    if body.template_id is None:
        if body.subject is None:
            raise Unprocessable("missing_subject", "give 'subject' or 'template_id'", "subject")
        return body
    if sponsor_id is None:
        raise Unprocessable(
            "unknown_template",
            "a platform-wide type cannot use a sponsor's template",
            "template_id",
        )
    try:
        template = await templates.get(session, sponsor_id, body.template_id)
    except NotFound:
        raise Unprocessable(
            "unknown_template", f"no template '{body.template_id}'", "template_id"
        ) from None
    wanted = body.template_version or template.latest_version
    try:
        version = await templates.get_version(session, template.id, wanted)
    except NotFound:
        raise Unprocessable(
            "unknown_template_version", f"the template has no version {wanted}", "template_version"
        ) from None
    return body.model_copy(
        update={
            "subject": version.subject,
            "message_body": version.message_body,
            "html_body": version.html_body,
            "text_body": version.text_body,
        }
    )


async def create(session: AsyncSession, sponsor_id: str | None, body: MessageTypeIn) -> MessageType:
    """A sponsor's type, or (``sponsor_id`` None) a platform-wide one."""
    body = await _resolved(session, sponsor_id, body)
    await check(body)
    message_type = MessageType(id=uuid.uuid4(), sponsor_id=sponsor_id)
    _assign(message_type, body)
    await repository.add_type(session, message_type)
    return message_type


async def replace(
    session: AsyncSession, sponsor_id: str | None, type_id: uuid.UUID, body: MessageTypeIn
) -> MessageType:
    """The whole type replaced; messages already queued send with the new content."""
    body = await _resolved(session, sponsor_id, body)
    await check(body)
    message_type = await repository.get_type(session, sponsor_id, type_id)
    _assign(message_type, body)
    message_type.updated_at = func.now()
    await session.flush()
    return message_type


def _assign(message_type: MessageType, body: MessageTypeIn) -> None:
    message_type.key = body.key
    message_type.category = body.category
    message_type.preference_category = body.preference_category or DEFAULT_PREFERENCE.get(
        body.category
    )
    message_type.template_id = body.template_id
    message_type.template_version = body.template_version
    message_type.subject = body.subject or ""
    message_type.message_body = body.message_body
    message_type.html_body = body.html_body
    message_type.text_body = body.text_body
    message_type.variables = [v.model_dump(mode="json") for v in body.variables]
    message_type.from_name = body.from_name
    message_type.reply_to = body.reply_to
    message_type.default_recipients = _addresses(body.default_recipients, "default_recipients")
    message_type.reminder_offsets = body.reminder_offsets
    message_type.attachment_rules = (
        body.attachment_rules.model_dump() if body.attachment_rules is not None else None
    )
