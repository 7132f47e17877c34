"""Public unsubscribe routes (RFC 8058 one-click POST and a confirmation page).

No auth: the signed token names the delivery. ``GET`` only shows a page with
a button (mail scanners fetch GETs; a GET alone never unsubscribes). ``POST``
(``List-Unsubscribe=One-Click``, form-urlencoded or multipart; the body is
not required to be anything else) writes the suppression to PostgreSQL before
answering 200 — no redirect, no cookies. The pixel and click routes live in
``fastpath`` (raw ASGI, for speed).
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from service import metrics
from service.http import transaction
from service.tracking import logic
from service.tracking.tokens import Kind, TokenSigner

router = APIRouter(tags=["public"])

_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

_NOT_FOUND = HTMLResponse(
    "<!doctype html><title>Link not found</title><p>This unsubscribe link is not valid.</p>",
    status_code=404,
    headers=_HEADERS,
)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><meta name=robots content=noindex>"
        f"<title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>{body}",
        status_code=status,
        headers=_HEADERS,
    )


def _signer(request: Request) -> TokenSigner:
    signer: TokenSigner = request.app.state.tracking.signer
    return signer


@router.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    """Ask to confirm; never unsubscribes by itself."""
    if _signer(request).verify(token, Kind.UNSUBSCRIBE) is None:
        return _NOT_FOUND
    action = html.escape(f"/u/{token}", quote=True)
    return _page(
        "Unsubscribe",
        f'<p>Do you want to stop receiving these emails?</p><form method="post" '
        f'action="{action}"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f'<button type="submit">Unsubscribe</button></form>',
    )


@router.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    """RFC 8058 one-click: suppress the address for the sponsor, durably, then 200."""
    claims = _signer(request).verify(token, Kind.UNSUBSCRIBE)
    if claims is None:
        return _NOT_FOUND
    async with transaction(request) as session:
        found = await logic.unsubscribe(session, claims.delivery_id, source="one-click")
    if not found:
        return _NOT_FOUND
    metrics.TRACKING_HITS.labels("unsubscribe").inc()
    return _page("You are unsubscribed", "<p>You will not receive these emails again.</p>")
