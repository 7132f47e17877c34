"""Preference rules: the defaults, which categories may be batched, what a marketing
opt-out is, and what a message does under its recipient's preference.

A marketing opt-out is the sponsor's ``unsubscribed`` suppression (source
``preferences``): campaigns already exclude suppressed addresses where they plan,
so their send path does not change, and a campaign's own unsubscribe link shows
here as a marketing opt-out. Every other category is a ``recipient_preferences``
row; no row reads as the defaults.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.preferences import (
    BATCHED,
    CATEGORIES,
    CategoryPreference,
    PreferenceCategory,
    PreferencesIn,
    PreferencesOut,
)
from service.errors import Unprocessable
from service.preferences import repository
from service.preferences.tokens import PreferenceClaims, read
from service.tracking import repository as tracking
from service.tracking.tokens import Kind, TokenSigner

# What a message does under its recipient's preference.
Decision = Literal["send", "suppress", "hold"]


async def current(session: AsyncSession, sponsor_id: str, email: str) -> PreferencesOut:
    """Every category as it applies now (defaults where nothing was chosen)."""
    chosen = {
        row.category: CategoryPreference(
            opted_out=row.opted_out,
            frequency=row.frequency,
            format=row.format,
        )
        for row in await repository.rows(session, sponsor_id, email)
    }
    values = {category: chosen.get(category, CategoryPreference()) for category in CATEGORIES}
    marketing = values["marketing"].model_copy(
        update={"opted_out": await repository.unsubscribed(session, sponsor_id, email)}
    )
    return PreferencesOut(email=email, **{**values, "marketing": marketing})


def check(body: PreferencesIn) -> None:
    """422 naming the field: only alerts and summaries may wait for a digest."""
    for category in CATEGORIES:
        change = getattr(body, category)
        if change is None or change.frequency in (None, "immediately"):
            continue
        if category not in BATCHED:
            raise Unprocessable(
                "frequency_not_supported",
                f"{category} are sent as they come: only alerts and summaries can be "
                "daily or weekly",
                f"{category}.frequency",
            )


async def update(
    session: AsyncSession, sponsor_id: str, email: str, body: PreferencesIn
) -> PreferencesOut:
    """Apply a partial change; categories and fields left out keep their value."""
    check(body)
    for category in CATEGORIES:
        change = getattr(body, category)
        if change is None:
            continue
        changes = change.model_dump(exclude_none=True)
        if category == "marketing" and "opted_out" in changes:
            await repository.set_marketing_opt_out(
                session, sponsor_id, email, changes.pop("opted_out")
            )
        if changes:
            await repository.upsert(session, sponsor_id, email, category, changes)
    return await current(session, sponsor_id, email)


async def opt_out(
    session: AsyncSession, sponsor_id: str, email: str, category: PreferenceCategory
) -> None:
    """One category, and only it, stops (a one-click unsubscribe)."""
    if category == "marketing":
        await repository.set_marketing_opt_out(session, sponsor_id, email, True)
    else:
        await repository.upsert(session, sponsor_id, email, category, {"opted_out": True})


async def resolve(
    session: AsyncSession, signer: TokenSigner, token: str
) -> PreferenceClaims | None:
    """Who a preference link is for: a preference token, or a campaign delivery's
    unsubscribe token (marketing); None for anything else."""
    claims = read(signer, token)
    if claims is not None:
        return claims
    unsubscribe = signer.verify(token, Kind.UNSUBSCRIBE)
    if unsubscribe is None:
        return None
    delivery = await tracking.delivery_for_unsubscribe(session, unsubscribe.delivery_id)
    if delivery is None:
        return None
    return PreferenceClaims(delivery.sponsor_id, delivery.recipient_email, "marketing")


def decide(opted_out: bool | None, frequency: str | None) -> Decision:
    """A message under its recipient's preference for its category (None: no row)."""
    if opted_out:
        return "suppress"
    if frequency in ("daily", "weekly"):
        return "hold"
    return "send"
