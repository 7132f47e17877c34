"""The preference centre's words, one small catalogue per language.

The language is ``?lang=`` when it names one we have, else the first of
``Accept-Language`` we have, else English. A new language is one more entry
with every key of ``en`` (a test checks they match).
"""

from __future__ import annotations

from typing import Final

Catalogue = dict[str, str]

CATALOGUES: Final[dict[str, Catalogue]] = {
    "en": {
        "title": "Email preferences",
        "intro": "Choose which emails {sponsor} sends to {email}.",
        "marketing": "News and offers",
        "summaries": "Summaries",
        "reminders": "Reminders",
        "alerts": "Alerts",
        "digests": "Digests",
        "receive": "Send me these emails",
        "frequency": "How often",
        "immediately": "As they happen",
        "daily": "Once a day",
        "weekly": "Once a week",
        "format": "Format",
        "detailed": "Detailed",
        "brief": "Brief",
        "save": "Save preferences",
        "saved_title": "Preferences saved",
        "saved": "Your choices are saved and apply to the next email.",
        "back": "Change them again",
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_ask": "Stop receiving {category} from {sponsor}? Other emails keep coming.",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed": "You will no longer receive {category} from {sponsor}.",
        "manage": "Manage all preferences",
    },
    "de": {
        "title": "E-Mail-Einstellungen",
        "intro": "Wählen Sie, welche E-Mails {sponsor} an {email} sendet.",
        "marketing": "Neuigkeiten und Angebote",
        "summaries": "Zusammenfassungen",
        "reminders": "Erinnerungen",
        "alerts": "Benachrichtigungen",
        "digests": "Übersichten",
        "receive": "Diese E-Mails erhalten",
        "frequency": "Wie oft",
        "immediately": "Sofort",
        "daily": "Einmal täglich",
        "weekly": "Einmal wöchentlich",
        "format": "Format",
        "detailed": "Ausführlich",
        "brief": "Kurz",
        "save": "Einstellungen speichern",
        "saved_title": "Einstellungen gespeichert",
        "saved": "Ihre Auswahl ist gespeichert und gilt ab der nächsten E-Mail.",
        "back": "Erneut ändern",
        "unsubscribe_title": "Abmelden",
        "unsubscribe_ask": "Keine {category} mehr von {sponsor} erhalten? Andere E-Mails "
        "kommen weiterhin.",
        "unsubscribe_button": "Abmelden",
        "unsubscribed_title": "Sie sind abgemeldet",
        "unsubscribed": "Sie erhalten keine {category} mehr von {sponsor}.",
        "manage": "Alle Einstellungen verwalten",
    },
}


def language(query: str | None, accept_language: str | None) -> str:
    """The catalogue to use for this request."""
    if query and query.lower() in CATALOGUES:
        return query.lower()
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in CATALOGUES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else "en"
