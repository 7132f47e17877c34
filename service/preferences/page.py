"""The public preference centre: ``/preferences/{token}``, no login, no JavaScript.

``GET`` shows a form (a fieldset per category); a plain form ``POST`` saves it
and answers with a confirmation page. ``/preferences/{token}/unsubscribe`` is a
message's ``List-Unsubscribe`` target: ``POST`` (RFC 8058 one-click) opts out of
the link's category only and answers 200; ``GET`` only asks, since mail
scanners fetch links. A link that is not genuine is a 404 with the error shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.preferences import BATCHED, CATEGORIES, CategoryPreferenceIn, PreferencesIn
from service.errors import NotFound, Unprocessable
from service.http import transaction
from service.models import Sponsor
from service.preferences import logic
from service.preferences.catalogue import CATALOGUES, language
from service.preferences.tokens import PreferenceClaims
from service.tracking.tokens import TokenSigner

router = APIRouter(tags=["public"])

# Our own templates, autoescaped; never the sponsors' sandbox.
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
)
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_FORMATTED = ("summaries", "digests")
# A form names at most every field of every category; anything longer is not ours.
_MAX_FORM_BYTES = 4096
Lang = Annotated[str | None, Query(max_length=10)]


def _signer(request: Request) -> TokenSigner:
    signer: TokenSigner = request.app.state.tracking.signer
    return signer


async def _claims(
    session: AsyncSession, request: Request, token: str
) -> tuple[PreferenceClaims, Sponsor]:
    claims = await logic.resolve(session, _signer(request), token)
    sponsor = None if claims is None else await session.get(Sponsor, claims.sponsor_id)
    if claims is None or sponsor is None:
        raise NotFound("preference_link_not_found", "this preference link is not valid", "token")
    return claims, sponsor


def _page(request: Request, lang: str | None, **values: Any) -> HTMLResponse:
    chosen = language(lang, request.headers.get("accept-language"))
    t = CATALOGUES[chosen]
    html = _PAGES.get_template("page.html").render(
        lang=chosen, t=t, batched=BATCHED, formatted=_FORMATTED, **values
    )
    return HTMLResponse(html, headers={**_HEADERS, "Content-Language": chosen})


def _suffix(lang: str | None) -> str:
    return f"?lang={lang}" if lang in CATALOGUES else ""


@router.get("/preferences/{token}", response_class=HTMLResponse, include_in_schema=False)
async def centre(token: str, request: Request, lang: Lang = None) -> HTMLResponse:
    """The form, filled with the recipient's current choices."""
    async with transaction(request) as session:
        claims, sponsor = await _claims(session, request, token)
        current = await logic.current(session, claims.sponsor_id, claims.email)
    t = CATALOGUES[language(lang, request.headers.get("accept-language"))]
    return _page(
        request,
        lang,
        title=t["title"],
        form=True,
        sponsor=sponsor.name,
        email=claims.email,
        action=f"/preferences/{token}{_suffix(lang)}",
        # The category the link came from first: what the reader came to change.
        preferences=[
            (c, getattr(current, c)) for c in sorted(CATEGORIES, key=lambda c: c != claims.category)
        ],
    )


def _from_form(form: dict[str, list[str]]) -> PreferencesIn:
    """Every category as the form shows it: an unticked box is an opt-out."""
    changes: dict[str, CategoryPreferenceIn] = {}
    for category in CATEGORIES:
        frequency = form.get(f"{category}.frequency", [None])[0]
        format_ = form.get(f"{category}.format", [None])[0]
        values = {
            "opted_out": form.get(f"{category}.receive", [""])[0] != "yes",
            "frequency": frequency if category in BATCHED else None,
            "format": format_ if category in _FORMATTED else None,
        }
        try:
            changes[category] = CategoryPreferenceIn.model_validate(values)
        except ValidationError as exc:
            # Only a hand-made post gets here: the form offers valid values alone.
            where = ".".join(str(part) for part in exc.errors()[0]["loc"])
            raise Unprocessable(
                "validation_error", "not a choice the form offers", f"{category}.{where}"
            ) from None
    return PreferencesIn(**changes)


@router.post("/preferences/{token}", response_class=HTMLResponse, include_in_schema=False)
async def save(token: str, request: Request, lang: Lang = None) -> HTMLResponse:
    """The form posted without JavaScript: saved, then a confirmation page."""
    body = await request.body()
    form = parse_qs(body[:_MAX_FORM_BYTES].decode(errors="replace"))
    changes = _from_form(form)
    async with transaction(request) as session:
        claims, _ = await _claims(session, request, token)
        await logic.update(session, claims.sponsor_id, claims.email, changes)
    t = CATALOGUES[language(lang, request.headers.get("accept-language"))]
    return _page(
        request,
        lang,
        title=t["saved_title"],
        message=t["saved"],
        saved=True,
        back=f"/preferences/{token}{_suffix(lang)}",
    )


def _unsubscribe_values(
    request: Request, lang: str | None, claims: PreferenceClaims, sponsor: Sponsor
) -> dict[str, Any]:
    t = CATALOGUES[language(lang, request.headers.get("accept-language"))]
    return {"t": t, "category": t[claims.category or "marketing"], "sponsor": sponsor.name}


@router.get(
    "/preferences/{token}/unsubscribe", response_class=HTMLResponse, include_in_schema=False
)
async def unsubscribe_page(token: str, request: Request, lang: Lang = None) -> HTMLResponse:
    """Ask to confirm; never unsubscribes by itself."""
    async with transaction(request) as session:
        claims, sponsor = await _claims(session, request, token)
    v = _unsubscribe_values(request, lang, claims, sponsor)
    return _page(
        request,
        lang,
        title=v["t"]["unsubscribe_title"],
        ask=True,
        message=v["t"]["unsubscribe_ask"].format(category=v["category"], sponsor=v["sponsor"]),
        action=f"/preferences/{token}/unsubscribe{_suffix(lang)}",
        back=f"/preferences/{token}{_suffix(lang)}",
    )


@router.post(
    "/preferences/{token}/unsubscribe", response_class=HTMLResponse, include_in_schema=False
)
async def unsubscribe(token: str, request: Request, lang: Lang = None) -> HTMLResponse:
    """RFC 8058 one-click: the link's category (marketing if it names none) stops,
    durably, then 200; no redirect, no cookies."""
    async with transaction(request) as session:
        claims, sponsor = await _claims(session, request, token)
        await logic.opt_out(
            session, claims.sponsor_id, claims.email, claims.category or "marketing"
        )
    v = _unsubscribe_values(request, lang, claims, sponsor)
    return _page(
        request,
        lang,
        title=v["t"]["unsubscribed_title"],
        message=v["t"]["unsubscribed"].format(category=v["category"], sponsor=v["sponsor"]),
        back=f"/preferences/{token}{_suffix(lang)}",
    )
