"""Template rules: immutable versions, declared variables, and what a campaign compiles."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.http import CampaignIn
from schemas.templates import TemplateContentIn, TemplateIn, TemplatePatch
from service.errors import RenderError, Unprocessable
from service.models import Campaign, Sponsor, Template, TemplateVersion
from service.settings import Settings
from service.templates import repository
from service.templates.compiled import CompiledMessage, RenderedMessage, compile_message
from service.templates.content import Brand, Content
from service.templates.links import check_links
from service.templates.sandbox import off_loop
from service.templates.urls import DeliveryUrls, UrlBuilder
from service.templates.validate import used_variables, validate
from service.templates.variables import KNOWN_VARIABLES
from service.tracking.tokens import Kind


def brand_for(sponsor: Sponsor, campaign: Campaign | None = None) -> Brand:
    """``sponsor.*`` and ``event.*`` for a campaign's messages."""
    event: dict[str, Any] = {}
    if campaign is not None:
        meta_event = (campaign.metadata_ or {}).get("event")
        if isinstance(meta_event, dict):
            event.update(meta_event)
        if campaign.event_id:
            event.setdefault("id", campaign.event_id)
    return Brand(
        sponsor={
            "id": sponsor.id,
            "name": sponsor.name,
            "from_name": sponsor.from_name or sponsor.name,
            "postal_address": sponsor.postal_address or "",
        },
        event=event,
    )


def content_of(campaign: Campaign, variant: int | None = None) -> Content:
    """The campaign's content, or its A/B variant ``variant``'s (``docs/ab-tests.md``):
    the variant's fields over the campaign's; a variant's body replaces the whole body."""
    if variant is None or not campaign.ab_test:
        return Content(
            subject=campaign.subject,
            message_body=campaign.message_body,
            html_body=campaign.html_body,
            text_body=campaign.text_body,
        )
    changes: dict[str, Any] = campaign.ab_test["variants"][variant]
    body_given = "message_body" in changes or "html_body" in changes
    return Content(
        subject=changes.get("subject", campaign.subject),
        message_body=changes.get("message_body") if body_given else campaign.message_body,
        html_body=changes.get("html_body") if body_given else campaign.html_body,
        text_body=changes.get("text_body", None if body_given else campaign.text_body),
        preheader=changes.get("preheader"),
    )


def compile_campaign(
    sponsor: Sponsor, campaign: Campaign, variant: int | None = None
) -> CompiledMessage:
    """The campaign's message (or its A/B variant's), compiled (once per campaign, variant
    and process, by its callers)."""
    return compile_message(
        content_of(campaign, variant),
        brand_for(sponsor, campaign),
        tracking=campaign.tracking_enabled,
    )


def _compile_for_save(content: Content, brand: Brand, tracking: bool) -> CompiledMessage:
    check_links(content)
    return compile_message(content, brand, tracking=tracking)


async def compile_for_save(content: Content, brand: Brand, *, tracking: bool) -> CompiledMessage:
    """Check content about to be saved (links included) and compile it, off the event loop."""
    return await off_loop(_compile_for_save, content, brand, tracking)


def _render_campaign(
    sponsor: Sponsor,
    campaign: Campaign,
    lead: dict[str, Any],
    urls_for: Callable[[int], DeliveryUrls],
    variant: int | None,
) -> RenderedMessage:
    message = compile_campaign(sponsor, campaign, variant)
    return message.render(lead, urls_for(len(message.links)))


async def render_campaign(
    sponsor: Sponsor,
    campaign: Campaign,
    lead: dict[str, Any],
    urls_for: Callable[[int], DeliveryUrls],
    variant: int | None = None,
) -> RenderedMessage:
    """What ``lead`` gets (previews, the view-in-browser page), rendered off the event loop;
    an A/B test's ``variant`` (None: the campaign's own content).

    ``urls_for(n)`` gives the URLs of a message with ``n`` tracked links.
    Raises ``RenderError`` when the lead's data breaks the template.
    """
    return await off_loop(_render_campaign, sponsor, campaign, lead, urls_for, variant)


def url_builder(settings: Settings) -> UrlBuilder:
    return UrlBuilder(settings.public_base_url, settings.tracking_signer())


def list_id_domain(settings: Settings) -> str:
    return settings.list_id_domain or urlsplit(settings.public_base_url).hostname or "localhost"


async def campaign_content(
    session: AsyncSession, sponsor_id: str, body: CampaignIn
) -> tuple[Content, uuid.UUID | None, int | None]:
    """The content a new campaign sends: inline, or a template version (latest by default)."""
    if body.template_id is None:
        if body.subject is None:
            raise Unprocessable("validation_error", "give a subject or a template_id", "subject")
        if body.message_body is None and body.html_body is None:
            raise Unprocessable(
                "validation_error",
                "give a message_body or an html_body (or a template_id)",
                "message_body",
            )
        content = Content(body.subject, body.message_body, body.html_body, body.text_body)
        return content, None, None
    template = await repository.get(session, sponsor_id, body.template_id)
    version = await repository.get_version(
        session, template.id, body.template_version or template.latest_version
    )
    content = Content(version.subject, version.message_body, version.html_body, version.text_body)
    return content, template.id, version.version


# Set by the service, not the lead: never need declaring.
_SYSTEM_VARIABLES = frozenset(
    ("sponsor", "event", "unsubscribe_url", "view_in_browser_url", "preferences_url")
)


def declared_variables(body: TemplateContentIn, content: Content) -> list[str]:
    """The version's variables: declared ones must be known and cover what is used."""
    used = used_variables(content)
    if body.variables is None:
        return sorted(v for v in used if v != "attributes" and v not in _SYSTEM_VARIABLES)
    declared = {v.strip() for v in body.variables if v.strip()}
    for name in declared:
        root, _, rest = name.partition(".")
        if root not in KNOWN_VARIABLES or (rest and root not in ("attributes", "sponsor", "event")):
            raise Unprocessable(
                "unknown_template_variable", f"'{name}' is not a known variable", "variables"
            )
    missing = sorted(
        v
        for v in used
        if v != "attributes"
        and v not in declared
        and v.partition(".")[0] not in declared
        and v.partition(".")[0] not in _SYSTEM_VARIABLES
    )
    if missing:
        raise Unprocessable(
            "undeclared_template_variable",
            f"used but not declared: {', '.join(missing)}",
            "variables",
        )
    return sorted(declared)


def _content(body: TemplateContentIn) -> Content:
    return Content(body.subject, body.message_body, body.html_body, body.text_body)


async def create(
    session: AsyncSession, sponsor_id: str, body: TemplateIn
) -> tuple[Template, TemplateVersion]:
    content = _content(body)
    await off_loop(validate, content)
    template = Template(
        id=uuid.uuid4(),
        sponsor_id=sponsor_id,
        name=body.name,
        category=body.category,
        latest_version=1,
    )
    session.add(template)
    await session.flush()
    version = _version(template, body, content)
    session.add(version)
    await session.flush()
    return template, version


async def add_version(
    session: AsyncSession, sponsor_id: str, template_id: uuid.UUID, body: TemplateContentIn
) -> TemplateVersion:
    """A new immutable version; earlier ones (and campaigns using them) stay as they were."""
    content = _content(body)
    await off_loop(validate, content)
    template = await repository.get(session, sponsor_id, template_id, lock=True)
    template.latest_version += 1
    template.updated_at = func.now()
    version = _version(template, body, content)
    session.add(version)
    await session.flush()
    return version


def _version(template: Template, body: TemplateContentIn, content: Content) -> TemplateVersion:
    """The template's ``latest_version`` with this content."""
    return TemplateVersion(
        template_id=template.id,
        version=template.latest_version,
        subject=body.subject,
        message_body=body.message_body,
        html_body=body.html_body,
        text_body=body.text_body,
        variables=declared_variables(body, content),
    )


async def view_in_browser(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, token: str
) -> str | None:
    """The HTML a delivery got, rendered again (off the event loop) for its signed "view"
    token; None when the token is forged, its delivery is gone, or its content no longer
    renders for the lead."""
    builder = url_builder(settings)
    claims = builder.signer.verify(token, Kind.VIEW)
    if claims is None:
        return None
    async with sessions() as session:  # closed before rendering: no connection held
        found = await repository.delivery_for_view(session, claims.delivery_id)
    if found is None:
        return None
    campaign, sponsor, fields, variant = found
    try:
        rendered = await render_campaign(
            sponsor,
            campaign,
            fields,
            lambda n_links: builder.for_delivery(claims.delivery_id, n_links),
            # An A/B test's row: its variant, or the winner for a row of the rest.
            variant if variant is not None else campaign.ab_winner,
        )
    except (RenderError, Unprocessable):  # content that no longer renders: nothing to show
        return None
    return rendered.html


def rename(template: Template, patch: TemplatePatch) -> None:
    """Apply the name or category a PATCH sent; content changes are new versions."""
    for name in patch.model_fields_set:
        setattr(template, name, getattr(patch, name))
