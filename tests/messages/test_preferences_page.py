"""The public preference centre: a signed link opens it without a login, a plain form
post saves it (no JavaScript), it speaks English and German, and it renders in
headless Chromium (screenshots kept under ``var/screenshots``)."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.preferences import tokens
from service.preferences.catalogue import CATALOGUES, language
from service.settings import Settings
from service.tracking.tokens import Kind, TokenSigner
from tests.browser import SCREENSHOTS, assert_not_blank, browse, png_pixels, sample
from tests.conftest import TokenFactory, served
from tests.factories import sent_campaign
from tests.fakes.resend_server import FakeResend
from tests.sending.test_sending import Api as CampaignApi

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def signer(migrated: Settings) -> TokenSigner:
    return migrated.tracking_signer()


@pytest.fixture
def email() -> str:
    return f"{uuid.uuid4().hex[:8]}@customer.example"


@pytest.fixture
def link(signer: TokenSigner, sponsor: str, email: str) -> str:
    return "/preferences/" + tokens.sign(signer, sponsor, email, "alerts")


async def _current(
    client: httpx.AsyncClient, token: TokenFactory, sponsor: str, email: str
) -> dict[str, dict[str, object]]:
    response = await client.get(
        f"/api/v1/sponsors/{sponsor}/preferences/{email}", headers=token(sponsor)
    )
    assert response.status_code == 200, response.text
    found: dict[str, dict[str, object]] = response.json()
    return found


def _tampered(link: str) -> str:
    """One character of the signature changed (not the last: its low bits may be padding)."""
    i = len(link) - 5
    return link[:i] + ("A" if link[i] != "A" else "B") + link[i + 1 :]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("suffix", ["", "/unsubscribe"])
async def test_a_tampered_link_is_a_404_with_the_error_shape(
    client: httpx.AsyncClient, link: str, method: str, suffix: str
) -> None:
    response = await client.request(method, _tampered(link) + suffix, headers=FORM)
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("preference_link_not_found", "token")


async def test_a_link_for_a_sponsor_that_does_not_exist_is_a_404(
    client: httpx.AsyncClient, signer: TokenSigner, email: str
) -> None:
    response = await client.get("/preferences/" + tokens.sign(signer, "nobody", email, None))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "preference_link_not_found"


async def test_the_centre_shows_each_category_in_a_fieldset_with_the_current_choices(
    client: httpx.AsyncClient, token: TokenFactory, sponsor: str, email: str, link: str
) -> None:
    await client.put(
        f"/api/v1/sponsors/{sponsor}/preferences/{email}",
        headers=token(sponsor),
        json={"alerts": {"opted_out": True}, "summaries": {"frequency": "weekly"}},
    )
    response = await client.get(link)
    assert response.status_code == 200
    page = response.text
    assert response.headers["cache-control"] == "no-store"
    assert "<script" not in page and f'action="{link}"' in page
    # A fieldset per category, and one per choice inside: two frequencies, two formats.
    assert page.count("<fieldset>") == 5 + 2 + 2
    assert page.count("<legend>") == page.count("<fieldset>")
    assert re.search(r'name="alerts.receive" value="yes"\s*>', page)  # not checked
    assert re.search(r'name="marketing.receive" value="yes"\s*checked', page)
    assert re.search(r'name="summaries.frequency" value="weekly"\s*checked', page)
    assert email in page
    # The link came from an alert: alerts first, the others in their order.
    legends = re.findall(r"<legend>([^<]+)</legend>", page)
    assert legends[:3] == ["Alerts", "How often", "News and offers"]


async def test_a_plain_form_post_saves_and_answers_with_a_confirmation(
    client: httpx.AsyncClient, token: TokenFactory, sponsor: str, email: str, link: str
) -> None:
    form = (
        "marketing.receive=yes&summaries.receive=yes&summaries.frequency=daily"
        "&summaries.format=brief&reminders.receive=yes&digests.receive=yes"
        "&alerts.frequency=immediately"
    )  # alerts unticked: an opt-out
    response = await client.post(link, content=form.encode(), headers=FORM)
    assert response.status_code == 200, response.text
    assert "Preferences saved" in response.text and 'role="status"' in response.text

    found = await _current(client, token, sponsor, email)
    assert found["alerts"]["opted_out"] is True
    assert found["summaries"] == {"opted_out": False, "frequency": "daily", "format": "brief"}
    assert found["marketing"]["opted_out"] is False


async def test_a_form_asking_a_digest_of_reminders_is_refused_naming_the_field(
    client: httpx.AsyncClient, link: str
) -> None:
    # The form never offers it; a hand-made post is still checked like the API.
    response = await client.post(link, content=b"reminders.frequency=daily", headers=FORM)
    assert response.status_code == 200  # ignored: reminders have no frequency in the form
    response = await client.post(link, content=b"summaries.frequency=hourly", headers=FORM)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "summaries.frequency"


async def test_the_centre_speaks_german_by_accept_language_and_lang_chooses(
    client: httpx.AsyncClient, link: str
) -> None:
    german = await client.get(link, headers={"Accept-Language": "fr;q=0.9, de-DE, en;q=0.5"})
    assert german.headers["content-language"] == "de"
    assert '<html lang="de">' in german.text and "Benachrichtigungen" in german.text
    english = await client.get(link + "?lang=en", headers={"Accept-Language": "de"})
    assert '<html lang="en">' in english.text and "Alerts" in english.text
    saved = await client.post(link + "?lang=de", content=b"", headers=FORM)
    assert "Einstellungen gespeichert" in saved.text


def test_every_catalogue_has_every_english_key_and_the_language_choice_falls_back() -> None:
    for lang, catalogue in CATALOGUES.items():
        assert catalogue.keys() == CATALOGUES["en"].keys(), lang
    assert language(None, "es, de;q=0.3") == "de"
    assert language("xx", "ja") == "en"
    assert language("DE", None) == "de"


async def test_the_unsubscribe_link_asks_on_get_and_stops_the_category_on_post(
    client: httpx.AsyncClient, token: TokenFactory, sponsor: str, email: str, link: str
) -> None:
    asked = await client.get(link + "/unsubscribe")
    assert asked.status_code == 200 and "Alerts" in asked.text
    assert (await _current(client, token, sponsor, email))["alerts"]["opted_out"] is False
    done = await client.post(
        link + "/unsubscribe", content=b"List-Unsubscribe=One-Click", headers=FORM
    )
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    found = await _current(client, token, sponsor, email)
    assert found["alerts"]["opted_out"] is True and found["marketing"]["opted_out"] is False


async def test_a_campaign_emails_link_opens_the_centre_of_its_recipient_on_marketing(
    client: httpx.AsyncClient,
    token: TokenFactory,
    sponsor: str,
    signer: TokenSigner,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    campaign = await sent_campaign(sessions, sponsor, recipients=2)
    link = "/preferences/" + signer.sign(Kind.UNSUBSCRIBE, campaign.delivery_ids[1])
    page = await client.get(link)
    assert page.status_code == 200 and campaign.emails[1] in page.text
    done = await client.post(link + "/unsubscribe", headers=FORM)
    assert done.status_code == 200
    found = await _current(client, token, sponsor, campaign.emails[1])
    assert found["marketing"]["opted_out"] is True
    unknown = "/preferences/" + signer.sign(Kind.UNSUBSCRIBE, 2**40)
    assert (await client.get(unknown)).status_code == 404


async def test_a_campaign_email_links_to_its_recipients_centre_in_its_footer(
    workers: None, client: httpx.AsyncClient, sponsor: str, token: TokenFactory, fake: FakeResend
) -> None:
    campaigns = CampaignApi(client, sponsor, token)
    await campaigns.leads(3)
    created = await campaigns.create()
    await campaigns.wait_status(created["id"], "sent")
    (message,) = fake.messages_to(f"lead1@{campaigns.domain}")
    found = re.search(
        r'href="(https?://[^"]+/preferences/[^"]+)"[^>]*>Manage preferences', message.html or ""
    )
    assert found, message.html
    path = urlsplit(found.group(1)).path
    assert path in (message.text or "")
    page = await client.get(path)
    assert page.status_code == 200 and f"lead1@{campaigns.domain}" in page.text
    done = await client.post(path + "/unsubscribe", headers=FORM)
    assert done.status_code == 200
    current = await _current(client, token, sponsor, f"lead1@{campaigns.domain}")
    assert current["marketing"]["opted_out"] is True


@pytest.mark.parametrize(
    ("lang", "words"), [("en", ("Email preferences", "Alerts")), ("de", ("E-Mail", "Kurz"))]
)
async def test_the_centre_renders_in_headless_chromium(
    migrated: Settings, link: str, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    shot = SCREENSHOTS / f"preferences-{lang}.png"
    shot.unlink(missing_ok=True)
    with served(migrated) as base:
        dom = await asyncio.to_thread(
            browse, f"{base}{link}?lang={lang}", shot, tmp_path / "profile", 800, 1400
        )
    assert f'<html lang="{lang}">' in dom
    assert all(word in dom for word in words)
    assert dom.count('type="radio"') == 2 * 3 + 2 * 2
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (800, 1400)
    assert_not_blank(sample(rows), min_inked=0.01)
