"""Public pages behind an appointment email's reschedule and cancel links.

No auth: the signed token names the appointment and the action. ``GET`` shows
the appointment and a form (a mail scanner fetching the link asks nothing);
``POST`` publishes the request for the booking system, durably, before the page
answers. Plain HTML, no script, labelled fields: it works in any browser and
with a screen reader. A link to a cancelled, completed or past appointment
shows that and takes no request.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from service.appointments import requests
from service.appointments.links import Action, LinkClaims, Links
from service.http import lookup, transaction

router = APIRouter(tags=["public"])

_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
# A note longer than the contract allows is cut; a body far larger is not read.
_MAX_BODY = 16 * 1024
_WORDS = {
    Action.RESCHEDULE: ("Reschedule your appointment", "Ask to reschedule", "reason or times"),
    Action.CANCEL: ("Cancel your appointment", "Ask to cancel", "reason"),
}
_CLOSED = {
    "cancelled": "This appointment is cancelled.",
    "completed": "This appointment has taken place.",
    "past": "This appointment has already started or taken place.",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{html.escape(title)}</title>'
        f"<main><h1>{html.escape(title)}</h1>{body}</main></html>",
        status_code=status,
        headers=_HEADERS,
    )


_NOT_FOUND = _page("Link not found", "<p>This link is not valid.</p>", 404)


def _claims(request: Request, token: str) -> LinkClaims | None:
    links: Links = request.app.state.appointment_links
    return links.read(token)


def _summary(found: requests.Standing) -> str:
    return f"<p><strong>{html.escape(found.title)}</strong><br>{html.escape(found.when)}</p>"


@router.get("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
async def request_page(token: str, request: Request) -> HTMLResponse:
    """The appointment and a form to confirm; asks nothing by itself."""
    claims = _claims(request, token)
    if claims is None:
        return _NOT_FOUND
    async with lookup(request) as session:
        found = await requests.standing(session, claims, datetime.now(UTC))
    if found is None:
        return _NOT_FOUND
    title, button, note = _WORDS[claims.action]
    if found.closed is not None:
        return _page(title, _summary(found) + f"<p>{_CLOSED[found.closed]}</p>")
    action = html.escape(f"/a/{token}", quote=True)
    return _page(
        title,
        _summary(found) + f'<form method="post" action="{action}">'
        f'<p><label for="note">Your {note} (optional)</label><br>'
        '<textarea id="note" name="note" rows="4" cols="40" maxlength="2000"></textarea></p>'
        f'<p><button type="submit">{button}</button></p></form>'
        "<p>Your request goes to the organiser, who will confirm by email.</p>",
    )


@router.post("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
async def send_request(token: str, request: Request) -> HTMLResponse:
    """Publish the lead's request, durably, then say so."""
    claims = _claims(request, token)
    if claims is None:
        return _NOT_FOUND
    body = await request.body()
    fields = parse_qs(body[:_MAX_BODY].decode(errors="replace"))
    note = fields.get("note", [None])[0]
    async with transaction(request) as session:
        found = await requests.request(session, claims, note, datetime.now(UTC))
    if found is None:
        return _NOT_FOUND
    title = _WORDS[claims.action][0]
    if found.closed is not None:
        return _page(title, _summary(found) + f"<p>{_CLOSED[found.closed]}</p>")
    return _page(
        "Request sent",
        _summary(found) + "<p>The organiser has your request and will confirm by email.</p>",
    )
