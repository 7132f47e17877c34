"""``campaignctl provider-check``: one message through the Resend account, and what
Resend answered.

It goes the way a campaign goes: a template created and published with the
account's key, one email sent with it through ``POST /emails/batch`` by the
same adapter, then read back with ``GET /emails/{id}``, and the template
deleted. It can only report the provider's answers: whether the key may manage
templates, the ids, and whether the body Resend shows has the variables filled
in. Whether ``{{{VAR}}}`` inserts a value as given (no second HTML escaping)
shows only in the received mail, which a human checks (``PROBE_SHOWN``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import resend
from resend.exceptions import ResendError

from service.errors import AccountError, ProviderError
from worker.providers.base import OutgoingEmail
from worker.providers.resend import ResendProvider

__all__ = ["PROBE_HTML", "PROBE_SHOWN", "CheckReport", "check"]

# The HTML variable as the sender would send it: already escaped.
PROBE_HTML = "Tom &amp; Jerry &lt;check&gt;"
# What the received mail must show if Resend inserted it as given.
PROBE_SHOWN = "Tom & Jerry <check>"
_PROBE_TEXT = "Tom & Jerry <check>"


@dataclass
class CheckReport:
    """What Resend answered at each step; ``ok`` when the message went out."""

    lines: list[str] = field(default_factory=list)
    ok: bool = False

    def say(self, line: str) -> None:
        self.lines.append(line)


async def check(provider: ResendProvider, sender: str, to: str) -> CheckReport:
    """Send one message from ``sender`` to ``to`` with a template (whole, if the key
    may not manage templates) and report every answer."""
    report = CheckReport()
    run = uuid.uuid4().hex[:12]
    template_id = await _template(provider, report, run)
    email = OutgoingEmail(
        delivery_id=0,
        campaign_id=f"provider-check-{run}",
        sender=sender,
        to=to,
        subject=f"campaign-service provider check {run}",
        sender_name="campaign-service check",
        sender_address=sender,
    )
    if template_id is not None:
        email.template_id, email.variables = template_id, {"H0": PROBE_HTML, "T0": _PROBE_TEXT}
    else:
        email.html, email.text = f"<p>{PROBE_HTML}</p>", _PROBE_TEXT
    try:
        (result,) = await provider.send_batch([email], f"provider-check-{run}")
    except ProviderError as exc:
        report.say(f"send: refused: {exc.code}: {exc.message}")
    else:
        if result.provider_message_id:
            report.ok = True
            report.say(f"send: accepted, email id {result.provider_message_id}")
            await _read_back(report, result.provider_message_id, template_id is not None)
        else:
            report.say(f"send: refused for the recipient: {result.error}")
    if template_id is not None:
        try:
            await provider.remove_template(template_id)
            report.say(f"template: {template_id} deleted")
        except ProviderError as exc:
            report.say(f"template: {template_id} not deleted: {exc.code}: {exc.message}")
    report.say(f"check the received mail: it must read '{PROBE_SHOWN}', not '{PROBE_HTML}'")
    return report


async def _template(provider: ResendProvider, report: CheckReport, run: str) -> str | None:
    try:
        template_id = await provider.create_template(
            f"provider-check {run}", "<p>{{{H0}}}</p>", "{{{T0}}}", ["H0", "T0"]
        )
    except AccountError as exc:
        report.say(f"key: {exc.code}: {exc.message}")
        report.say(
            "templates: refused; campaigns will send whole bodies (give the key full access)"
        )
        return None
    except ProviderError as exc:
        report.say(f"templates: refused: {exc.code}: {exc.message}; sending a whole body")
        return None
    report.say(f"key: may manage templates; template {template_id} created and published")
    return template_id


async def _read_back(report: CheckReport, email_id: str, templated: bool) -> None:
    try:
        shown = await resend.Emails.get_async(email_id)
    except ResendError as exc:
        report.say(f"read back: refused: {exc.error_type}: {exc.message}")
        return
    html = str(shown.get("html") or "")
    report.say(f"read back: last event {shown.get('last_event') or 'unknown'}")
    if not templated:
        return
    if not html:
        report.say("template variables: unknown (Resend showed no body)")
    elif "{{{" in html:
        report.say("template variables: NOT filled in (the body still holds {{{…}}})")
    elif PROBE_HTML in html:
        report.say("template variables: filled in as given")
    else:
        report.say("template variables: filled in, but not as given (escaped again?)")
