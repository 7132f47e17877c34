"""A/B tests on the real stack: API → planner → sender → fake Resend → pixel → ingester →
the ``ab.decide`` timer → the rest sent the winner (``docs/ab-tests.md``)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.settings import Settings
from service.tracking.tokens import Kind, TokenSigner
from tests import factories
from tests.conftest import TokenFactory, eventually
from tests.fakes.resend_server import FakeResend

pytestmark = pytest.mark.usefixtures("workers")

BROWSER = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"}
IMAGE_PROXY = {"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"}


def ab_body(**ab_test: Any) -> dict[str, Any]:
    return factories.campaign(
        subject="Base {{ name }}",
        variants=[
            {"subject": "Alpha {{ name }}", "sender_name": "Alpha Desk"},
            {"subject": "Bravo {{ name }}", "preheader": "Bravo preview line"},
        ],
        ab_test={"test_share": 50, "wait_seconds": 3600, "measure": "open_rate", **ab_test},
    )


class AbCampaign:
    """An A/B campaign of a fresh sponsor's, created through the API."""

    def __init__(self, client: httpx.AsyncClient, sponsor: str, headers: dict[str, str]) -> None:
        self.client, self.sponsor, self.headers = client, sponsor, headers
        self.id = ""

    @property
    def url(self) -> str:
        return f"/api/v1/sponsors/{self.sponsor}/campaigns/{self.id}"

    async def create(self, leads: int, body: dict[str, Any]) -> None:
        rows = factories.leads(leads, domain=f"{self.sponsor}.example")
        await factories.add_leads(self.client, self.sponsor, self.headers, rows)
        response = await self.client.post(
            f"/api/v1/sponsors/{self.sponsor}/campaigns", headers=self.headers, json=body
        )
        assert response.status_code == 202, response.text
        self.id = response.json()["id"]

    async def get(self) -> dict[str, Any]:
        response = await self.client.get(self.url, headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def reaches(self, status: str, within: float = 60) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            body = await self.get()
            return body if body["status"] == status else None

        return await eventually(check, within=within)

    async def act(self, action: str, json: Any = None) -> httpx.Response:
        return await self.client.post(f"{self.url}/{action}", headers=self.headers, json=json)

    async def variants(self) -> dict[str, Any]:
        response = await self.client.get(f"{self.url}/variants", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def ab(client: httpx.AsyncClient, sponsor: str, token: TokenFactory) -> AbCampaign:
    return AbCampaign(client, sponsor, token(sponsor))


async def rows(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> list[Any]:
    async with sessions() as session:
        result = await session.execute(
            text("""
SELECT id, lead_id, recipient_email, variant, status FROM campaign_deliveries
WHERE campaign_id = :id ORDER BY id
"""),
            {"id": uuid.UUID(campaign_id)},
        )
        return list(result.all())


async def end_the_wait(sessions: async_sessionmaker[AsyncSession], campaign_id: str) -> None:
    """The wait is over: the decision timer is due now."""
    async with sessions.begin() as session:
        moved = await session.execute(
            text("UPDATE timers SET due_at = now() WHERE key = :key"),
            {"key": f"ab.decide:{campaign_id}"},
        )
        assert moved.rowcount == 1  # type: ignore[attr-defined]


def assert_each_lead_got_one_message(
    fake: FakeResend, campaign_id: str, deliveries: list[Any], leads: int
) -> None:
    assert len(deliveries) == leads
    assert len({row.lead_id for row in deliveries}) == leads
    assert all(row.status == "sent" for row in deliveries)
    sent = [m for m in fake.messages if m.tag("campaign_id") == campaign_id]
    by_address: dict[str, int] = {}
    for message in sent:
        for address in message.to:
            by_address[address] = by_address.get(address, 0) + 1
    assert sorted(by_address) == sorted(row.recipient_email for row in deliveries)
    assert set(by_address.values()) == {1}


async def test_human_opens_that_put_b_ahead_make_b_the_winner_sent_to_the_rest(
    ab: AbCampaign,
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    migrated: Settings,
    fake: FakeResend,
) -> None:
    await ab.create(120, ab_body(fallback="first"))
    waiting = await ab.reaches("waiting_for_winner")
    assert waiting["ab_decision"] is None
    test_rows = await rows(sessions, ab.id)
    assert len(test_rows) == 60  # 50 % of 120, the rest not planned yet
    by_variant = {v: [r for r in test_rows if r.variant == v] for v in (0, 1)}
    assert [len(by_variant[0]), len(by_variant[1])] == [30, 30]
    subjects = {m.to[0]: m.subject for m in fake.messages if m.tag("campaign_id") == ab.id}
    assert all(subjects[r.recipient_email].startswith("Alpha") for r in by_variant[0])
    assert all(subjects[r.recipient_email].startswith("Bravo") for r in by_variant[1])
    message_of = {m.to[0]: m for m in fake.messages if m.tag("campaign_id") == ab.id}
    alpha, bravo = (
        message_of[by_variant[0][0].recipient_email],
        message_of[by_variant[1][0].recipient_email],
    )
    assert alpha.sender.startswith("Alpha Desk") and "Bravo preview line" not in (alpha.html or "")
    assert bravo.sender.startswith("Test Sponsor") and "Bravo preview line" in (bravo.html or "")

    signer: TokenSigner = migrated.tracking_signer()
    for row in by_variant[1][:20]:
        await client.get(f"/o/{signer.sign(Kind.OPEN, row.id)}", headers=BROWSER)
    for row in by_variant[0][:3]:
        await client.get(f"/o/{signer.sign(Kind.OPEN, row.id)}", headers=BROWSER)
    for row in by_variant[0][3:25]:  # machine opens never count
        await client.get(f"/o/{signer.sign(Kind.OPEN, row.id)}", headers=IMAGE_PROXY)

    async def counted() -> dict[str, Any] | None:
        body = await ab.variants()
        opened = [v["opened"] for v in body["variants"]]
        return body if opened == [3, 20] else None

    before = await eventually(counted)
    assert [v["sent"] for v in before["variants"]] == [30, 30]
    assert before["variants"][1]["leader"] and before["variants"][1]["open_rate"] == 20 / 30
    assert before["variants"][0]["confidence"] > 0.95

    await end_the_wait(sessions, ab.id)
    done = await ab.reaches("sent")
    decision = done["ab_decision"]
    assert decision["winner"] == "B" and decision["how"] == "measure"
    assert decision["measure"] == "open_rate" and decision["confidence"] > 0.95
    assert decision["rates"] == {"A": 0.1, "B": round(20 / 30, 6)}

    deliveries = await rows(sessions, ab.id)
    assert_each_lead_got_one_message(fake, ab.id, deliveries, 120)
    rest = [r for r in deliveries if r.variant is None]
    assert len(rest) == 60
    subjects = {m.to[0]: m.subject for m in fake.messages if m.tag("campaign_id") == ab.id}
    assert all(subjects[r.recipient_email].startswith("Bravo") for r in rest)
    after = await ab.variants()
    assert [v["sent"] for v in after["variants"]] == [30, 30]  # the test share's figures
    assert [v["winner"] for v in after["variants"]] == [False, True]
    assert after["decision"] == decision

    link = await client.post(f"{ab.url}/report-links", headers=ab.headers, json={})
    assert link.status_code in (200, 201), link.text
    url = urlsplit(link.json()["url"])
    page = (await client.get(f"{url.path}?{url.query}")).text
    assert '<tr class="winner" data-variant="B"><td>B ★ winner</td>' in page
    assert '<tr data-variant="A"><td>A</td>' in page
    assert "66.7 %" in page and "significant at 95 %" in page


async def assert_previews_show_each_lead_its_variant(
    ab: AbCampaign, settings: Settings, deliveries: list[Any]
) -> None:
    """The preview and the view-in-browser page show a lead what it got: its variant, or
    the winner (B) for a lead of the rest; ``?variant=`` shows any variant."""
    tested_a = next(r for r in deliveries if r.variant == 0)
    rest = next(r for r in deliveries if r.variant is None)

    async def preview(**params: Any) -> dict[str, Any]:
        response = await ab.client.get(
            f"{ab.url}/preview", headers=ab.headers, params={"format": "json", **params}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    assert (await preview(lead_id=tested_a.lead_id))["subject"].startswith("Alpha")
    assert (await preview(lead_id=rest.lead_id))["subject"].startswith("Bravo")
    assert (await preview(variant="A"))["subject"].startswith("Alpha")
    assert (await preview())["subject"].startswith("Base")
    unknown = await ab.client.get(f"{ab.url}/preview", headers=ab.headers, params={"variant": "F"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "variant"
    signer = settings.tracking_signer()
    for row, shown in ((tested_a, False), (rest, True)):
        page = await ab.client.get(f"/v/{signer.sign(Kind.VIEW, row.id)}")
        assert page.status_code == 200
        assert ("Bravo preview line" in page.text) is shown


async def test_a_winner_chosen_by_hand_is_sent_to_the_rest_and_a_second_choice_is_409(
    ab: AbCampaign,
    sessions: async_sessionmaker[AsyncSession],
    fake: FakeResend,
    migrated: Settings,
) -> None:
    await ab.create(20, ab_body())
    await ab.reaches("waiting_for_winner")
    unknown = await ab.act("winner", {"variant": "C"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "variant"

    chosen = await ab.act("winner", {"variant": "B"})
    assert chosen.status_code == 202, chosen.text
    done = await ab.reaches("sent")
    assert done["ab_decision"]["how"] == "manual" and done["ab_decision"]["winner"] == "B"
    again = await ab.act("winner", {"variant": "A"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"
    deliveries = await rows(sessions, ab.id)
    assert_each_lead_got_one_message(fake, ab.id, deliveries, 20)
    await assert_previews_show_each_lead_its_variant(ab, migrated, deliveries)
    # The timer was cancelled with the decision: nothing is left to fire.
    async with sessions() as session:
        left = await session.scalar(
            text("SELECT count(*) FROM timers WHERE key = :key"), {"key": f"ab.decide:{ab.id}"}
        )
    assert left == 0


async def test_choosing_a_winner_for_a_campaign_without_variants_is_409(
    client: httpx.AsyncClient, sponsor: str, token: TokenFactory
) -> None:
    headers = token(sponsor)
    draft = await factories.draft(client, sponsor, headers)
    url = f"/api/v1/sponsors/{sponsor}/campaigns/{draft['id']}"
    response = await client.post(f"{url}/winner", headers=headers, json={"variant": "A"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_an_ab_test"
    assert (await client.get(f"{url}/variants", headers=headers)).status_code == 404


async def test_with_no_significant_difference_the_fallback_sends_the_first_variant(
    ab: AbCampaign, sessions: async_sessionmaker[AsyncSession], fake: FakeResend
) -> None:
    await ab.create(20, ab_body(fallback="first"))
    await ab.reaches("waiting_for_winner")
    await end_the_wait(sessions, ab.id)
    done = await ab.reaches("sent")
    decision = done["ab_decision"]
    assert decision["winner"] == "A" and decision["how"] == "fallback"
    assert decision["reason"] == "fallback: no significant difference"
    assert decision["p_value"] == 1.0
    rest = [r for r in await rows(sessions, ab.id) if r.variant is None]
    subjects = {m.to[0]: m.subject for m in fake.messages if m.tag("campaign_id") == ab.id}
    assert rest and all(subjects[r.recipient_email].startswith("Alpha") for r in rest)


async def test_pause_and_resume_in_every_phase_still_send_each_lead_exactly_once(
    ab: AbCampaign, sessions: async_sessionmaker[AsyncSession], fake: FakeResend
) -> None:
    fake.set_latency(0.3)  # the test share takes a few batches' time: long enough to pause
    try:
        await ab.create(500, ab_body(test_share=50))
        await ab.reaches("testing", within=30)
        paused = await ab.act("pause")
        assert paused.status_code == 200, paused.text
        resumed = await ab.act("resume")
        assert resumed.status_code == 202, resumed.text
        assert resumed.json()["status"] in ("testing", "waiting_for_winner")
    finally:
        fake.set_latency(0.0)
    await ab.reaches("waiting_for_winner")
    assert (await ab.act("pause")).status_code == 200
    retried = await ab.act("retry-failed")  # failed test rows go out with the rest
    assert retried.status_code == 409 and retried.json()["error"]["code"] == "ab_test_undecided"
    resumed = await ab.act("resume")
    assert resumed.json()["status"] == "waiting_for_winner"
    assert (await ab.act("winner", {"variant": "A"})).status_code == 202
    paused = await ab.act("pause")
    if paused.status_code == 200:  # else sent already: nothing left to pause
        assert (await ab.act("resume")).status_code == 202
    await ab.reaches("sent")
    deliveries = await rows(sessions, ab.id)
    assert_each_lead_got_one_message(fake, ab.id, deliveries, 500)
    assert sum(r.variant is not None for r in deliveries) == 250


async def test_cancel_while_waiting_for_the_winner_plans_no_rest(
    ab: AbCampaign, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await ab.create(20, ab_body())
    await ab.reaches("waiting_for_winner")
    assert (await ab.act("cancel")).status_code == 200
    await end_the_wait(sessions, ab.id)
    async with sessions() as session:

        async def fired() -> bool:
            left = await session.scalar(
                text("SELECT count(*) FROM timers WHERE key = :key"),
                {"key": f"ab.decide:{ab.id}"},
            )
            await session.rollback()
            return bool(left == 0)

        await eventually(fired)
    assert (await ab.get())["status"] == "cancelled"
    assert len(await rows(sessions, ab.id)) == 10


async def test_a_winner_chosen_while_testing_sends_pending_test_rows_their_own_variant(
    ab: AbCampaign, sessions: async_sessionmaker[AsyncSession], fake: FakeResend
) -> None:
    fake.set_latency(0.3)
    try:
        await ab.create(400, ab_body(test_share=50))
        await ab.reaches("testing", within=30)
        chosen = await ab.act("winner", {"variant": "B"})
    finally:
        fake.set_latency(0.0)
    assert chosen.status_code == 202, chosen.text
    assert chosen.json()["status"] in ("sending", "sent")
    await ab.reaches("sent")
    deliveries = await rows(sessions, ab.id)
    assert_each_lead_got_one_message(fake, ab.id, deliveries, 400)
    subjects = {m.to[0]: m.subject for m in fake.messages if m.tag("campaign_id") == ab.id}
    tested_a = [r for r in deliveries if r.variant == 0]
    assert len(tested_a) == 100
    assert all(subjects[r.recipient_email].startswith("Alpha") for r in tested_a)
    assert sum(subjects[r.recipient_email].startswith("Bravo") for r in deliveries) == 300
