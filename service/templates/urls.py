"""The public URLs a message carries, in one place (sender, previews and tests share it).

The contract with the tracking endpoints::

    {PUBLIC_BASE_URL}/o/{token}   open pixel           (Kind.OPEN)
    {PUBLIC_BASE_URL}/c/{token}   tracked link         (Kind.CLICK, position = link number)
    {PUBLIC_BASE_URL}/u/{token}   one-click unsubscribe (Kind.UNSUBSCRIBE)
    {PUBLIC_BASE_URL}/v/{token}   view in browser      (Kind.VIEW)
    {PUBLIC_BASE_URL}/preferences/{token}   preference centre (the unsubscribe token:
                                  a campaign delivery's link is marketing)

A transactional message's pixel and links use the same two paths with message
tokens (``Kind.MESSAGE_OPEN``, ``Kind.MESSAGE_CLICK``); its link targets are kept
on the message row (``messages.links``) when it is sent.

Click targets are never in the token: ``campaign_links`` (campaign, position, url)
holds them, written when the campaign's content is compiled.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from service.tracking.tokens import Kind, PreparedTokens, TokenSigner

# A delivery id no delivery row has: previews and test sends carry it, so their
# pixel, links and unsubscribe resolve to nothing and are never counted.
NO_DELIVERY = 0


@dataclass(slots=True)  # not frozen: built per recipient, cheaper; treat as read-only
class DeliveryUrls:
    """Every URL of one recipient's message."""

    open_pixel: str
    unsubscribe: str
    view_in_browser: str
    links: list[str]
    # The preference centre; a one-to-one message sets its own (``preferences/tokens.py``).
    preferences: str = ""


class UrlBuilder:
    """Signs one delivery's tokens in one call and turns them into URLs."""

    def __init__(self, public_base_url: str, signer: TokenSigner) -> None:
        base = public_base_url.rstrip("/")
        self.signer = signer
        self._open = f"{base}/o/"
        self._click = f"{base}/c/"
        self._unsubscribe = f"{base}/u/"
        self._view = f"{base}/v/"
        self._preferences = f"{base}/preferences/"
        self._plans: dict[int, PreparedTokens] = {}

    def _plan(self, n_links: int) -> PreparedTokens:
        plan = self._plans.get(n_links)
        if plan is None:
            requests = [(Kind.OPEN, 0), (Kind.UNSUBSCRIBE, 0), (Kind.VIEW, 0)]
            requests += [(Kind.CLICK, position) for position in range(n_links)]
            plan = self._plans[n_links] = self.signer.prepare(requests)
        return plan

    def for_delivery(self, delivery_id: int, n_links: int) -> DeliveryUrls:
        """The pixel, unsubscribe, view and ``n_links`` click URLs of ``delivery_id``."""
        tokens = self.signer.sign_prepared(delivery_id, self._plan(n_links))
        click = self._click
        return DeliveryUrls(
            open_pixel=self._open + tokens[0],
            unsubscribe=self._unsubscribe + tokens[1],
            view_in_browser=self._view + tokens[2],
            links=[click + token for token in tokens[3:]],
            preferences=self._preferences + tokens[1],
        )

    def for_message(self, message_id: uuid.UUID, n_links: int) -> DeliveryUrls:
        """A transactional message's URLs: its own pixel and links (sealed message
        tokens); unsubscribe and view resolve to no delivery, as before tracking."""
        urls = self.for_delivery(NO_DELIVERY, 0)
        seal = self.signer.seal_message
        urls.open_pixel = self._open + seal(Kind.MESSAGE_OPEN, message_id)
        urls.links = [
            self._click + seal(Kind.MESSAGE_CLICK, message_id, position)
            for position in range(n_links)
        ]
        return urls
