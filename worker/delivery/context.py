"""The campaign context: what sending needs of a campaign, compiled once and cached.

A campaign's message is compiled once per campaign, not per batch; its status
is trusted for ``STATUS_TTL_SECONDS`` and then read again, which bounds how
late a pause or cancel is seen. With Resend (``RESEND_TEMPLATES``), a round's
body is stored at the provider once, as a template, and each message carries
only the recipient's variables (``_decide_template``), unless a recipient's
value could pass the provider's limits (``provider_limits``) or the key may
only send.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from email.utils import formataddr

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.campaigns import ab, sending_repository, template_repository
from service.campaigns.lifecycle import CampaignStatus
from service.errors import AccountError, ProviderError, TransientProviderError
from service.models import Campaign, Sponsor
from service.settings import Settings
from service.templates import logic as template_logic
from service.templates import provider_limits
from service.templates.compiled import CompiledMessage, ProviderTemplate, single_line
from service.templates.urls import DeliveryUrls
from worker.delivery.accounts import Account, Accounts
from worker.providers.base import StoredTemplateProvider, TemplateProvider
from worker.ratelimit import Pacer

log = logging.getLogger(__name__)

# How long a campaign's status is trusted before it is read again (pause/cancel latency).
STATUS_TTL_SECONDS = 1.0


@dataclass
class CampaignContext:
    """What the sender needs of a campaign, compiled once and cached."""

    campaign_id: uuid.UUID
    sponsor_id: str
    status: str
    sender: str  # RFC 5322 (``formataddr``), as SMTP sends it
    reply_to: str | None
    hourly_cap: int | None
    message: CompiledMessage
    list_id: str
    checked_at: float
    # The message as a provider template, and the id of the one this round sends
    # with; messages go out whole while ``template_id`` is None.
    template: ProviderTemplate | None = None
    template_id: str | None = None
    # ``UNSUBSCRIBE_MAILTO``: an RFC 2369 mailto beside the one-click link.
    mailto: str | None = None
    # The campaign id as messages carry it (``OutgoingEmail.campaign_id``).
    tag: str = ""
    # ``sender``'s parts as they are: a provider API may format ``from`` its own way.
    sender_name: str = ""
    sender_address: str = ""
    # A/B tests: each variant's context (compiled once, with the campaign) and the
    # winner's index once chosen; rows without a variant are sent the winner.
    variants: dict[int, CampaignContext] = field(default_factory=dict)
    winner: int | None = None
    # The sponsor's provider account (None: the default), or why it cannot send.
    account: Account | None = None
    account_error: AccountError | None = None

    def for_variant(self, variant: int | None) -> CampaignContext:
        """The context a row of ``variant`` renders with (None: the winner, or the campaign)."""
        chosen = self.winner if variant is None else variant
        return self.variants.get(chosen, self) if chosen is not None else self

    def headers(self, urls: DeliveryUrls) -> dict[str, str]:
        """RFC 8058 one-click unsubscribe (+ RFC 2369 mailto when configured) and List-Id."""
        unsubscribe = f"<{urls.unsubscribe}>"
        if self.mailto:
            token = urls.unsubscribe.rsplit("/", 1)[-1]
            unsubscribe += f", <mailto:{self.mailto}?subject=unsubscribe%20{token}>"
        return {
            "List-Unsubscribe": unsubscribe,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": self.list_id,
        }


class CampaignContexts:
    """The cache of campaign contexts one sender process keeps."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        templates: TemplateProvider | None,
        pacer: Pacer,
        settings: Settings,
        accounts: Accounts | None = None,
    ) -> None:
        self.sessions = sessions
        self.templates = templates
        self.pacer = pacer
        self.settings = settings
        self.accounts = accounts
        self._campaigns: dict[uuid.UUID, CampaignContext] = {}
        self._lock = asyncio.Lock()
        self._list_id_domain = template_logic.list_id_domain(settings)

    async def get(self, campaign_id: uuid.UUID) -> CampaignContext | None:
        """The campaign's context, its status at most ``STATUS_TTL_SECONDS`` old."""
        cached = self._campaigns.get(campaign_id)
        if cached and time.monotonic() - cached.checked_at < STATUS_TTL_SECONDS:
            return cached
        # Batches arrive together: one of them compiles or refreshes, the others wait for it.
        async with self._lock:
            return await self._load(campaign_id)

    async def fresh(self, campaign_id: uuid.UUID) -> CampaignContext | None:
        """The campaign's context with its status and A/B winner read again now."""
        cached = self._campaigns.get(campaign_id)
        if cached is not None:
            cached.checked_at = float("-inf")
        return await self.get(campaign_id)

    def forget(self, campaign_id: uuid.UUID) -> None:
        """Drop a campaign that sends no more."""
        self._campaigns.pop(campaign_id, None)

    async def _load(self, campaign_id: uuid.UUID) -> CampaignContext | None:
        cached = self._campaigns.get(campaign_id)
        now = time.monotonic()
        if cached and now - cached.checked_at < STATUS_TTL_SECONDS:
            return cached
        if cached:
            async with self.sessions() as session:
                found = await sending_repository.status_and_template(session, campaign_id)
            if found is None:
                return None
            (cached.status, stored, cached.winner), cached.checked_at = found, now
            await self._decide_template(cached, stored)
            return cached
        async with self.sessions() as session:
            row = await sending_repository.campaign_with_sponsor(session, campaign_id)
        if row is None:
            return None
        campaign, sponsor = row
        context = self._compile(campaign, sponsor, now)
        await self._decide_template(context, campaign.provider_template_id)
        self._campaigns[campaign_id] = context
        return context

    def _compile(self, campaign: Campaign, sponsor: Sponsor, now: float) -> CampaignContext:
        name, address = single_line(sponsor.from_name or ""), single_line(sponsor.from_email)
        context = CampaignContext(
            campaign_id=campaign.id,
            sponsor_id=sponsor.id,
            status=campaign.status,
            sender=formataddr((name, address)),
            reply_to=single_line(sponsor.reply_to) if sponsor.reply_to else None,
            hourly_cap=sponsor.hourly_send_cap,
            message=template_logic.compile_campaign(sponsor, campaign),
            list_id=list_id(sponsor.name, sponsor.id, self._list_id_domain),
            checked_at=now,
            mailto=self.settings.unsubscribe_mailto,
            tag=str(campaign.id),
            sender_name=name,
            sender_address=address,
        )
        if self.accounts is not None:
            try:
                context.account = self.accounts.of(sponsor.provider)
            except AccountError as exc:
                context.account_error = exc
        if campaign.ab_test:
            # Whole bodies for A/B tests: one provider template per variant would mean
            # as many template decisions per round, for a campaign that sends few rows.
            context.variants = self._variants(campaign, sponsor, context)
            context.winner = campaign.ab_winner
        elif self._templates(context) is not None:
            context.template = context.message.provider_template()
        return context

    def _templates(self, context: CampaignContext) -> TemplateProvider | None:
        return self.templates if context.account is None else context.account.templates

    def _pacer(self, context: CampaignContext) -> Pacer:
        return self.pacer if context.account is None else context.account.pacer

    @staticmethod
    def _variants(
        campaign: Campaign, sponsor: Sponsor, context: CampaignContext
    ) -> dict[int, CampaignContext]:
        variants = {}
        for index in range(len((campaign.ab_test or {}).get("variants", []))):
            _, sender_name = ab.variant_content(campaign, index)
            name = single_line(sender_name) if sender_name else context.sender_name
            variants[index] = replace(
                context,
                message=template_logic.compile_campaign(sponsor, campaign, index),
                sender=formataddr((name, context.sender_address)),
                sender_name=name,
                variants={},
            )
        return variants

    async def _decide_template(self, context: CampaignContext, stored: str | None) -> None:
        """Set ``context.template_id`` from this round's decision, deciding it if nobody has.

        The first sender to see the round sending decides, under a lock: it
        creates the provider template (when the provider keeps templates,
        ``RESEND_TEMPLATES`` allows it and the message can be one) or records
        '' (whole bodies). A round keeps its decision, so a batch sent again by
        any sender sends the same request body under the same idempotency key.
        """
        templates = self._templates(context)
        if stored is None and templates is not None and context.status == CampaignStatus.SENDING:
            async with self.sessions.begin() as session:
                status, stored = await sending_repository.lock_template_decision(
                    session, context.campaign_id
                )
                if stored is None and status == CampaignStatus.SENDING:
                    stored = await self._create_template(session, context, templates)
                    await sending_repository.set_template_decision(
                        session, context.campaign_id, stored
                    )
        context.template_id = stored if stored and context.template is not None else None
        adopt = getattr(templates, "adopt_template", None)
        if adopt is not None and context.template_id and context.template is not None:
            # A provider that keeps templates in memory (SendGrid) learns one another
            # process made; a different id means another compile: send whole bodies.
            template = context.template
            if adopt(template.html, template.text, template.keys) != context.template_id:
                context.template_id = None

    async def _create_template(
        self, session: AsyncSession, context: CampaignContext, templates: TemplateProvider
    ) -> str:
        """The new template's id, or '' to send whole bodies (also when the provider fails)."""
        template = context.template
        if template is None or not self.settings.resend_templates:
            return ""
        try:
            if isinstance(templates, StoredTemplateProvider):
                return await self._create_stored(session, context, template, templates)
            # Kept in the provider's memory: nothing to record, nothing to delete later.
            for _ in range(2):  # creating and publishing: two requests at the provider's rate
                await self._pacer(context).acquire()
            return await templates.create_template(
                f"campaign {context.campaign_id}", template.html, template.text, template.keys
            )
        except ProviderError as exc:
            log.warning("campaign %s: sending whole bodies: %s", context.campaign_id, exc)
            return ""

    async def _create_stored(
        self,
        session: AsyncSession,
        context: CampaignContext,
        template: ProviderTemplate,
        templates: StoredTemplateProvider,
    ) -> str:
        """A template stored at the provider (Resend), recorded before it exists; '' when
        a recipient's value could pass the provider's limit or the key may only send."""
        if getattr(templates, "templates_refused", None) is not None:
            return ""  # the key cannot manage templates: logged once, by the provider
        if not await self._fits(session, context.campaign_id, template, templates):
            return ""
        # Recorded and committed before the provider has it, so a crash leaks none:
        # the relay deletes every recorded template once its campaign is done.
        async with self.sessions.begin() as own:
            row = await template_repository.record_creating(own, context.campaign_id)
        recorded = False

        async def created(template_id: str) -> None:
            nonlocal recorded
            async with self.sessions.begin() as own:
                await template_repository.record_created(own, row, template_id)
            recorded = True

        try:
            for _ in range(2):  # creating and publishing: two requests at the provider's rate
                await self._pacer(context).acquire()
            return await templates.create_template(
                f"campaign {context.campaign_id}",
                template.html,
                template.text,
                template.keys,
                on_created=created,
            )
        except ProviderError as exc:
            if not recorded and not isinstance(exc, TransientProviderError):
                # Refused outright: nothing was created, so nothing is left to delete.
                async with self.sessions.begin() as own:
                    await template_repository.forget(own, [row])
            raise

    async def _fits(
        self,
        session: AsyncSession,
        campaign_id: uuid.UUID,
        template: ProviderTemplate,
        templates: StoredTemplateProvider,
    ) -> bool:
        """Whether no pending recipient's variable can pass the provider's limit."""
        limit = templates.max_variable_chars
        needed = provider_limits.measures(template, limit)
        if needed is None:
            log.info("campaign %s: sending whole bodies: a slot is no bare variable", campaign_id)
            return False
        longest = await template_repository.longest_values(session, campaign_id, needed, limit)
        if not provider_limits.fits(longest, limit):
            log.info(
                "campaign %s: sending whole bodies: a recipient's value is longer than %d",
                campaign_id,
                limit,
            )
            return False
        return True


def list_id(name: str, sponsor_id: str, domain: str) -> str:
    """RFC 2919 ``List-Id``: the sponsor's name as a phrase (ASCII only) and a stable id."""
    phrase = "".join(
        c for c in single_line(name) if c.isascii() and c.isprintable() and c not in '"\\'
    )
    identifier = f"<{sponsor_id}.{domain}>"
    return f'"{phrase}" {identifier}' if phrase else identifier
