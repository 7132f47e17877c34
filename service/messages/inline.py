"""One-off messages: a message that brings its own template instead of a type's.

The template is checked at the request as a type's is at save (syntax, sandbox,
links; a 422 naming ``messages.i.template.FIELD``) but declares no variables:
the data is read as given, as ``attributes.*``. It is stored on the message row
(``messages.template``), and the sender renders it as it renders a type.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.messages import InlineTemplateIn, MessageIn
from service.errors import Unprocessable
from service.templates.content import Content
from service.templates.sandbox import off_loop
from service.templates.validate import validate


def content_of(template: InlineTemplateIn) -> Content:
    return Content(template.subject, template.message_body, template.html_body, template.text_body)


async def check(messages: Sequence[MessageIn]) -> None:
    """422 for the first message that names no type and no template, or both, or
    whose template must not be sent; one check for a template repeated in the request."""
    checked: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if (message.type is None) == (message.template is None):
            raise Unprocessable(
                "missing_message_type",
                "give either 'type' (a message type's key) or 'template', not both",
                f"{where}.type",
            )
        if message.template is None:
            continue
        key = message.template.model_dump_json()
        if key in checked:
            continue
        try:
            await off_loop(validate, content_of(message.template))
        except Unprocessable as exc:
            raise Unprocessable(exc.code, exc.message, f"{where}.template.{exc.field}") from None
        checked.add(key)
