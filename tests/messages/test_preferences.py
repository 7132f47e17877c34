"""Recipient preferences through the sponsor API and the message sender: a change
applies to the next message, per category; transactional messages ignore them."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.appointments import emails
from service.preferences import repository as preferences
from tests.conftest import TokenFactory
from tests.fakes.resend_server import FakeResend
from tests.messages.test_messages import Api as MessagesApi
from tests.sending.test_sending import Api as CampaignApi

pytestmark = pytest.mark.usefixtures("workers")

DEFAULT = {"opted_out": False, "frequency": "immediately", "format": "detailed"}
SUMMARY = (
    "<p>Week of {{ attributes.lead_name }}.</p>"
    '{% if preferences["format"] == "brief" %}<p>In brief.</p>'
    "{% else %}<p>In detail: every lead, every score.</p>{% endif %}"
)


class Api(MessagesApi):
    """Messages plus one recipient's preferences, for one test."""

    async def preferences(self, email: str) -> dict[str, Any]:
        response = await self.client.get(self.url(f"/preferences/{email}"), headers=self.headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def change(self, email: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.put(
            self.url(f"/preferences/{email}"), headers=self.headers, json=body
        )

    async def message(self, key: str, to: str) -> dict[str, Any]:
        """Send one message of type ``key`` and wait for its outcome."""
        response = await self.send({"type": key, "to": to, "data": {"lead_name": "Ada"}})
        assert response.status_code == 202, response.text
        return await self.settled(response.json()["ids"][0])


@pytest.fixture
def api(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> Api:
    return Api(client, sponsor, token)


def address() -> str:
    return f"{uuid.uuid4().hex[:8]}@customer.example"


async def test_a_recipient_without_choices_reads_as_the_defaults(api: Api) -> None:
    to = address()
    found = await api.preferences(to.upper())
    assert found["email"] == to
    for category in ("marketing", "summaries", "reminders", "alerts", "digests"):
        assert found[category] == DEFAULT


async def test_a_partial_update_changes_only_the_fields_and_categories_given(api: Api) -> None:
    to = address()
    first = await api.change(to, {"alerts": {"frequency": "daily"}})
    assert first.status_code == 200, first.text
    second = await api.change(to, {"alerts": {"format": "brief"}, "digests": {"opted_out": True}})
    assert second.status_code == 200, second.text
    found = await api.preferences(to)
    assert found["alerts"] == {"opted_out": False, "frequency": "daily", "format": "brief"}
    assert found["digests"] == {**DEFAULT, "opted_out": True}
    assert found["summaries"] == found["reminders"] == DEFAULT


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"reminders": {"frequency": "weekly"}}, "frequency_not_supported", "reminders.frequency"),
        ({"marketing": {"frequency": "daily"}}, "frequency_not_supported", "marketing.frequency"),
        ({"alerts": {"format": "huge"}}, "validation_error", "alerts.format"),
        ({"newsletters": {"opted_out": True}}, "validation_error", "newsletters"),
    ],
)
async def test_an_invalid_change_is_a_422_naming_the_field(
    api: Api, body: dict[str, Any], code: str, field: str
) -> None:
    response = await api.change(address(), body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)


async def test_reading_needs_campaigns_read_and_changing_needs_leads_write(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    url = f"/api/v1/sponsors/{sponsor}/preferences/{address()}"
    reader = token(sponsor, scopes="campaigns:read")
    assert (await client.get(url, headers=reader)).status_code == 200
    refused = await client.put(url, headers=reader, json={"alerts": {"opted_out": True}})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    writer = token(sponsor, scopes="leads:write")
    assert (await client.get(url, headers=writer)).status_code == 403


async def test_message_types_follow_a_preference_category_by_default_or_the_one_named(
    api: Api,
) -> None:
    alert = await api.add_type(key="lead.alert", category="notification")
    offer = await api.add_type(key="spring.offer", category="marketing")
    receipt = await api.add_type(key="order.receipt", category="transactional")
    summary = await api.add_type(
        key="weekly.summary", category="notification", preference_category="summaries"
    )
    assert alert["preference_category"] == "alerts"
    assert offer["preference_category"] == "marketing"
    assert receipt["preference_category"] is None
    assert summary["preference_category"] == "summaries"


async def test_an_opted_out_alert_is_suppressed_while_a_receipt_still_goes(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type()  # lead.qualified.alert, a notification: alerts
    await api.add_type(key="order.receipt", category="transactional")
    to = address()
    assert (await api.message("lead.qualified.alert", to))["status"] == "sent"
    changed = await api.change(to, {"alerts": {"opted_out": True}})
    assert changed.status_code == 200, changed.text

    alert = await api.message("lead.qualified.alert", to)
    receipt = await api.message("order.receipt", to)
    assert alert["status"] == "suppressed"
    assert "opted out of alerts" in alert["last_error"]
    assert receipt["status"] == "sent"
    assert len(fake.messages_to(to)) == 2


async def test_a_daily_alert_is_held_for_the_digest(
    api: Api, fake: FakeResend, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.add_type()
    to = address()
    await api.change(to, {"alerts": {"frequency": "daily"}})
    held = await api.message("lead.qualified.alert", to)
    assert held["status"] == "held"
    assert [(e["type"], e["error"]) for e in held["history"]][1:] == [("held", "daily alerts")]
    assert fake.messages_to(to) == []
    async with sessions() as session:
        waiting = await preferences.held_messages(session, api.sponsor, limit=10, to=to)
    assert [str(m.id) for m in waiting] == [held["id"]]
    listed = await api.client.get(
        api.url("/messages"), headers=api.headers, params={"status": "held", "to": to}
    )
    assert [m["id"] for m in listed.json()["items"]] == [held["id"]]


async def test_the_format_reaches_the_template(api: Api, fake: FakeResend) -> None:
    await api.add_type(
        key="weekly.summary",
        preference_category="summaries",
        subject="Your week",
        html_body=SUMMARY,
        variables=[{"name": "lead_name"}],
    )
    detailed, brief = address(), address()
    await api.change(brief, {"summaries": {"format": "brief"}})
    assert (await api.message("weekly.summary", detailed))["status"] == "sent"
    assert (await api.message("weekly.summary", brief))["status"] == "sent"
    assert "In detail" in (fake.messages_to(detailed)[0].html or "")
    assert "In brief." in (fake.messages_to(brief)[0].html or "")
    assert "In detail" not in (fake.messages_to(brief)[0].html or "")


async def test_a_notification_carries_one_click_unsubscribe_and_a_receipt_none(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type()
    await api.add_type(key="order.receipt", category="transactional")
    alert_to, receipt_to = address(), address()
    await api.message("lead.qualified.alert", alert_to)
    await api.message("order.receipt", receipt_to)
    alert, receipt = fake.messages_to(alert_to)[0], fake.messages_to(receipt_to)[0]

    target = alert.headers["List-Unsubscribe"]
    assert target.startswith("<http") and target.endswith("/unsubscribe>")
    assert "/preferences/" in target
    assert alert.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Manage preferences" in (alert.html or "")
    assert "List-Unsubscribe" not in receipt.headers
    assert "Manage preferences" not in (receipt.html or "")
    assert "Unsubscribe" not in (receipt.html or "") + (receipt.text or "")
    assert "/preferences/" not in (receipt.text or "")


async def test_a_notifications_one_click_unsubscribe_stops_that_category_only(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type()
    await api.add_type(key="order.receipt", category="transactional")
    await api.add_type(key="weekly.summary", preference_category="summaries")
    to = address()
    await api.message("lead.qualified.alert", to)
    target = fake.messages_to(to)[0].headers["List-Unsubscribe"].strip("<>")

    # RFC 8058: a POST with exactly this body, no cookies, no redirect followed.
    response = await api.client.post(
        urlsplit(target).path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text

    found = await api.preferences(to)
    assert found["alerts"]["opted_out"] is True
    assert not any(found[c]["opted_out"] for c in ("marketing", "summaries", "reminders"))
    assert (await api.message("lead.qualified.alert", to))["status"] == "suppressed"
    assert (await api.message("order.receipt", to))["status"] == "sent"
    assert (await api.message("weekly.summary", to))["status"] == "sent"


async def test_a_marketing_opt_out_is_the_sponsors_unsubscribed_suppression_alone(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type(key="spring.offer", category="marketing")
    await api.add_type()
    to = address()
    assert (await api.change(to, {"marketing": {"opted_out": True}})).status_code == 200
    listed = await api.client.get(api.url("/suppressions"), headers=api.headers)
    rows = [r for r in listed.json()["items"] if r["email"] == to]
    assert [(r["reason"], r["source"]) for r in rows] == [("unsubscribed", "preferences")]
    assert (await api.message("spring.offer", to))["status"] == "suppressed"
    # Campaigns exclude the suppression; the sponsor's alerts keep flowing.
    assert (await api.message("lead.qualified.alert", to))["status"] == "sent"

    assert (await api.change(to, {"marketing": {"opted_out": False}})).status_code == 200
    assert (await api.preferences(to))["marketing"]["opted_out"] is False
    assert (await api.message("spring.offer", to))["status"] == "sent"


async def test_a_suppression_the_sponsor_added_still_stops_notifications(
    api: Api, fake: FakeResend
) -> None:
    await api.add_type()
    to = address()
    added = await api.client.post(
        api.url("/suppressions"), headers=api.headers, json={"email": to, "reason": "unsubscribed"}
    )
    assert added.status_code == 201, added.text
    assert (await api.preferences(to))["marketing"]["opted_out"] is True
    assert (await api.message("lead.qualified.alert", to))["status"] == "suppressed"


def test_the_built_in_reminder_follows_reminders_and_other_appointment_messages_none() -> None:
    assert emails.type_values(emails.REMINDER)["preference_category"] == "reminders"
    for key in (emails.CONFIRMATION, emails.UPDATE, emails.CANCELLATION):
        assert emails.type_values(key)["preference_category"] is None


async def test_a_campaign_skips_a_lead_who_opted_out_of_marketing(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory, fake: FakeResend
) -> None:
    campaigns = CampaignApi(client, sponsor, token)
    await campaigns.leads(3)
    opted_out = f"lead1@{campaigns.domain}"
    changed = await client.put(
        f"/api/v1/sponsors/{sponsor}/preferences/{opted_out}",
        headers=token(sponsor),
        json={"marketing": {"opted_out": True}},
    )
    assert changed.status_code == 200, changed.text
    created = await campaigns.create()
    await campaigns.wait_status(created["id"], "sent")
    assert fake.messages_to(opted_out) == []
    assert len(fake.messages_to(f"lead2@{campaigns.domain}")) == 1
