"""Daily digests: cron schedules in the member's zone, one digest per period, none when empty.

The schedule is checked on its own; the firing by calling
``service.digests.logic.fire`` with a timer on the real database (twice, as a
restart would); one digest goes the whole way: the timers role fires it and
``message-sender`` hands it to the fake Resend.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.messages import MessageTypeIn
from service.digests import content, logic, schedule
from service.messages import types
from service.models import Appointment, Lead, Message
from service.templates.compiled import compile_message
from service.templates.content import Brand
from service.templates.urls import DeliveryUrls
from service.timers import repository as timers
from service.timers.repository import DueTimer
from tests.conftest import eventually
from tests.fakes.resend_server import FakeResend

BERLIN = ZoneInfo("Europe/Berlin")
# 08:00 in Berlin on 1 April 2027 (summer time); the period before it began on 31 March.
DUE = datetime(2027, 4, 1, 8, tzinfo=BERLIN)
PERIOD_START = datetime(2027, 3, 31, 8, tzinfo=BERLIN)


# The schedule ---------------------------------------------------------------------


def test_the_next_eight_oclock_in_berlin_follows_the_clocks_across_the_spring_change() -> None:
    saturday = datetime(2027, 3, 27, 9, tzinfo=BERLIN)  # clocks go forward on Sunday 28 March
    sunday = schedule.next_time("0 8 * * *", "Europe/Berlin", saturday)
    monday = schedule.next_time("0 8 * * *", "Europe/Berlin", sunday)
    assert sunday.astimezone(UTC) == datetime(2027, 3, 28, 6, tzinfo=UTC)
    assert monday.astimezone(UTC) == datetime(2027, 3, 29, 6, tzinfo=UTC)
    assert schedule.previous_time("0 8 * * *", "Europe/Berlin", sunday).astimezone(UTC) == datetime(
        2027, 3, 27, 7, tzinfo=UTC
    )


def test_the_next_eight_oclock_in_berlin_follows_the_clocks_across_the_autumn_change() -> None:
    saturday = datetime(2027, 10, 30, 9, tzinfo=BERLIN)  # clocks go back on Sunday 31 October
    sunday = schedule.next_time("0 8 * * *", "Europe/Berlin", saturday)
    assert sunday.astimezone(UTC) == datetime(2027, 10, 31, 7, tzinfo=UTC)


def test_a_weekday_cron_skips_the_weekend_in_the_members_zone() -> None:
    friday_evening = datetime(2027, 3, 26, 18, tzinfo=BERLIN)
    following = schedule.next_time("30 7 * * 1-5", "Europe/Berlin", friday_evening)
    assert following == datetime(2027, 3, 29, 7, 30, tzinfo=BERLIN)
    assert following.astimezone(UTC) == datetime(2027, 3, 29, 5, 30, tzinfo=UTC)


async def test_the_built_in_digest_type_passes_the_checks_a_sponsors_edit_would() -> None:
    await types.check(MessageTypeIn(**content.type_values()))


def test_the_digest_reads_its_leads_appointments_replies_conversions_campaigns_and_alerts() -> None:
    values = content.data(
        moment=DUE,
        zone="Europe/Berlin",
        leads=[
            {
                "email": "grace@navy.example", "name": "Grace Hopper", "company": "Navy",
                "title": "Rear Admiral", "intent_level": "hot", "intent_score": 92,
            }
        ],
        appointments=[
            {
                "appointment_id": "a", "start_at": datetime(2027, 4, 1, 14, tzinfo=BERLIN),
                "time_zone": "Europe/Berlin", "lead_email": "ada@customer.example",
                "details": {"title": "Product demo", "lead": {"name": "Ada Lovelace"}},
            }
        ],
        campaigns=[
            {
                "name": "Spring launch", "sent": 100, "opens": 30, "clicks": 5,
                "total_sent": 400, "total_opened": 90, "total_clicked": 12,
            }
        ],
        held=[{"id": "1", "subject": "Deal moved: Acme", "line": "14:05 · deal.alert"}],
        events=[
            {
                "kind": "reply", "type": "conversation.replied", "email": "lin@customer.example",
                "summary": {"name": "Lin", "outcome": "asked for a demo"}, "recorded_at": DUE,
            },
            {
                "kind": "conversion", "type": "order.paid", "email": "bo@customer.example",
                "summary": {"order": "A-17", "total": "120.00", "currency": "EUR"},
                "recorded_at": DUE,
            },
        ],
    )  # fmt: skip
    message = compile_message(
        types.content_of(MessageTypeIn(**content.type_values())),
        Brand(sponsor={"name": "ACME"}),
    )
    urls = DeliveryUrls(open_pixel="", unsubscribe="", view_in_browser="", links=[])
    rendered = message.render({"email": "rep@sponsor.example", "attributes": values}, urls)
    assert rendered.subject == "Your digest for Thursday 1 April 2027"
    for expected in (
        "Grace Hopper", "hot (92/100)", "Appointments today", "14:00", "Product demo",
        "Ada Lovelace", "Spring launch", "100 sent", "30 opens", "400 sent",
        "Deal moved: Acme", "14:05 · deal.alert", "Replies (1)", "asked for a demo",
        "Conversions (1)", "order A-17 paid, 120.00 EUR",
    ):  # fmt: skip
        assert expected in rendered.html, expected
        assert expected in rendered.text, expected
    assert "Appointments tomorrow" not in rendered.html  # a day with none is left out


# The API ----------------------------------------------------------------------------


async def subscribe(
    client: httpx.AsyncClient, sponsor: str, headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    values = {"email": f"rep-{uuid.uuid4().hex[:6]}@sponsor.example", "time_zone": "Europe/Berlin"}
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/digests", json={**values, **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_subscription_defaults_to_eight_oclock_local_and_sets_its_next_digest(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    before = datetime.now(UTC)
    created = await subscribe(client, sponsor, token(sponsor), email="Rep@Sponsor.example")
    assert created["cron"] == "0 8 * * *"
    assert created["email"] == "rep@sponsor.example"
    next_at = datetime.fromisoformat(created["next_digest_at"])
    assert next_at.astimezone(BERLIN).time() == datetime(2000, 1, 1, 8).time()
    assert before < next_at <= before + timedelta(days=1)


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"cron": "0 25 * * *"}, "cron", "invalid_cron"),
        ({"cron": "every morning"}, "cron", "invalid_cron"),
        ({"cron": "0 8 * *"}, "cron", "invalid_cron"),
        ({"time_zone": "Europe/Atlantis"}, "time_zone", "invalid_time_zone"),
        ({"time_zone": "../etc/passwd"}, "time_zone", "invalid_time_zone"),
        ({"email": "not an address"}, "email", "invalid_email"),
    ],
)
async def test_a_bad_cron_time_zone_or_address_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    body: dict[str, str],
    field: str,
    code: str,
) -> None:
    values = {"email": "rep@sponsor.example", "time_zone": "Europe/Berlin", **body}
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/digests", json=values, headers=token(sponsor)
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["code"] == code


async def test_a_member_subscribed_twice_is_a_409(
    client: httpx.AsyncClient, sponsor: str, token: Any
) -> None:
    await subscribe(client, sponsor, token(sponsor), email="rep@sponsor.example")
    response = await client.post(
        f"/api/v1/sponsors/{sponsor}/digests",
        json={"email": "rep@sponsor.example", "time_zone": "UTC"},
        headers=token(sponsor),
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "digest_subscription_exists"


async def test_changing_the_schedule_moves_the_next_digest_and_deleting_removes_it(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    created = await subscribe(client, sponsor, token(sponsor))
    url = f"/api/v1/sponsors/{sponsor}/digests/{created['id']}"
    body = {"email": created["email"], "time_zone": "America/New_York", "cron": "15 6 * * *"}
    replaced = (await client.put(url, json=body, headers=token(sponsor))).json()
    next_at = datetime.fromisoformat(replaced["next_digest_at"])
    local = next_at.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (6, 15)
    listed = (await client.get(url.rsplit("/", 1)[0], headers=token(sponsor))).json()
    assert [item["cron"] for item in listed["items"]] == ["15 6 * * *"]

    assert (await client.delete(url, headers=token(sponsor))).status_code == 204
    async with sessions() as session:
        assert await timers.due_at(session, [logic.timer_key(uuid.UUID(created["id"]))]) == {}
    assert (await client.get(url, headers=token(sponsor))).status_code == 404


# Firing -----------------------------------------------------------------------------


def due_timer(subscription: dict[str, Any], sponsor: str, due: datetime = DUE) -> DueTimer:
    payload = {"sponsor_id": sponsor, "subscription_id": subscription["id"]}
    return DueTimer(0, logic.KIND, logic.timer_key(uuid.UUID(subscription["id"])), due, payload)


async def fire(sessions: async_sessionmaker[AsyncSession], timer: DueTimer) -> None:
    async with sessions.begin() as session:
        await logic.fire(session, timer)


async def digests_to(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, email: str
) -> list[Message]:
    async with sessions() as session:
        rows = await session.scalars(
            select(Message).where(
                Message.sponsor_id == sponsor,
                Message.type_key == content.KEY,
                Message.to_email == email,
            )
        )
        return list(rows)


async def add_lead(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, created_at: datetime, **fields: Any
) -> None:
    async with sessions.begin() as session:
        session.add(
            Lead(
                sponsor_id=sponsor,
                email=f"{uuid.uuid4().hex[:8]}@customer.example",
                created_at=created_at,
                updated_at=created_at,
                **fields,
            )
        )


async def add_appointment(
    sessions: async_sessionmaker[AsyncSession], sponsor: str, start: datetime, title: str
) -> None:
    async with sessions.begin() as session:
        session.add(
            Appointment(
                sponsor_id=sponsor,
                appointment_id=uuid.uuid4().hex[:10],
                sequence=0,
                state="booked",
                start_at=start,
                end_at=start + timedelta(minutes=30),
                time_zone="Europe/Berlin",
                lead_email="ada@customer.example",
                details={
                    "title": title,
                    "lead": {"email": "ada@customer.example", "name": "Ada Lovelace"},
                    "host": {"email": "rep@sponsor.example", "name": "Sam Rep"},
                },
            )
        )


async def test_an_empty_day_sends_no_digest_and_sets_the_next_one(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    # A cold lead and a lead from before the period are not news.
    await add_lead(sessions, sponsor, PERIOD_START + timedelta(hours=2), intent_level="cold")
    await add_lead(sessions, sponsor, PERIOD_START - timedelta(hours=1), intent_level="hot")
    await fire(sessions, due_timer(subscription, sponsor))

    assert await digests_to(sessions, sponsor, subscription["email"]) == []
    async with sessions() as session:
        due = await timers.due_at(session, [logic.timer_key(uuid.UUID(subscription["id"]))])
    assert list(due.values()) == [datetime(2027, 4, 2, 8, tzinfo=BERLIN)]


async def test_a_day_with_a_qualified_lead_and_an_appointment_sends_one_digest_with_both(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    await add_lead(
        sessions, sponsor, PERIOD_START + timedelta(hours=5), name="Grace Hopper",
        company="Navy", intent_level="warm", intent_score=85,
    )  # fmt: skip
    await add_appointment(sessions, sponsor, datetime(2027, 4, 2, 10, tzinfo=BERLIN), "Demo")
    await add_appointment(sessions, sponsor, datetime(2027, 4, 3, 10, tzinfo=BERLIN), "Later")
    await fire(sessions, due_timer(subscription, sponsor))

    (digest,) = await digests_to(sessions, sponsor, subscription["email"])
    assert digest.status == "queued"
    data = digest.data
    assert data["period"] == "Thursday 1 April 2027"
    assert [(lead["name"], lead["intent"]) for lead in data["leads"]] == [
        ("Grace Hopper", "warm (85/100)")
    ]
    days = {day["label"]: day["appointments"] for day in data["days"]}
    assert days["today"] == []
    assert [(a["time"], a["title"], a["lead"]) for a in days["tomorrow"]] == [
        ("10:00", "Demo", "Ada Lovelace")
    ]
    async with sessions() as session:
        outboxed = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE key = :key"), {"key": str(digest.id)}
        )
    assert outboxed == 1


async def test_firing_twice_for_the_same_period_sends_one_digest(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    await add_lead(sessions, sponsor, PERIOD_START + timedelta(hours=1), intent_level="hot")
    timer = due_timer(subscription, sponsor)
    await fire(sessions, timer)
    await fire(sessions, timer)  # the process restarted and the same timer fired again
    assert len(await digests_to(sessions, sponsor, subscription["email"])) == 1


async def test_a_crash_between_claim_and_commit_leaves_the_period_to_send_once(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    await add_lead(sessions, sponsor, PERIOD_START + timedelta(hours=1), intent_level="hot")
    timer = due_timer(subscription, sponsor)
    with pytest.raises(RuntimeError):
        async with sessions.begin() as session:
            await logic.fire(session, timer)
            raise RuntimeError("killed before the commit")
    assert await digests_to(sessions, sponsor, subscription["email"]) == []
    await fire(sessions, timer)
    await fire(sessions, timer)
    assert len(await digests_to(sessions, sponsor, subscription["email"])) == 1


async def test_a_lead_qualifies_by_the_threshold_of_the_sponsors_starter_rule(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    installed = await client.post(
        f"/api/v1/sponsors/{sponsor}/triggers/starter",
        json={"team": ["sales@sponsor.example"], "qualified_score_threshold": 50},
        headers=token(sponsor),
    )
    assert installed.status_code == 201, installed.text
    subscription = await subscribe(client, sponsor, token(sponsor))
    await add_lead(sessions, sponsor, PERIOD_START + timedelta(hours=1), intent_score=60)
    await add_lead(sessions, sponsor, PERIOD_START + timedelta(hours=1), intent_score=40)
    await fire(sessions, due_timer(subscription, sponsor))
    (digest,) = await digests_to(sessions, sponsor, subscription["email"])
    assert [lead["intent"] for lead in digest.data["leads"]] == ["60/100"]


async def test_the_periods_campaign_figures_count_only_the_period_beside_the_totals(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    campaign_id = uuid.uuid4()
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO campaigns (id, sponsor_id, name, subject, audience_type, status,"
                " last_progress_at, completed_at)"
                " VALUES (:id, :sponsor, 'Spring launch', 'Hi', 'all', 'completed', :at, :at)"
            ),
            {"id": campaign_id, "sponsor": sponsor, "at": PERIOD_START + timedelta(hours=3)},
        )
        await session.execute(
            text(
                "INSERT INTO campaign_stats (campaign_id, shard, sent, opened, clicked)"
                " VALUES (:id, 0, 60, 20, 4), (:id, 1, 40, 10, 1)"
            ),
            {"id": campaign_id},
        )
        # Sent the day before (two), in the period (three), and at its end (the next one's).
        sent_at = [PERIOD_START - timedelta(hours=2)] * 2 + [PERIOD_START + timedelta(hours=1)] * 3
        sent_at.append(DUE)
        await session.execute(
            text(
                "INSERT INTO campaign_deliveries (campaign_id, lead_id, recipient_email, batch_no,"
                " status, sent_at) SELECT :id, n, 'r' || n || '@customer.example', 0, 'sent', at"
                " FROM unnest(CAST(:sent_at AS timestamptz[])) WITH ORDINALITY AS s(at, n)"
            ),
            {"id": campaign_id, "sent_at": sent_at},
        )
        await session.execute(
            text(
                "INSERT INTO campaign_stats_hourly (campaign_id, bucket, opens, clicks)"
                " VALUES (:id, :before, 7, 2), (:id, :inside, 3, 1), (:id, :due, 50, 9)"
            ),
            {
                "id": campaign_id,
                "before": PERIOD_START - timedelta(hours=1),
                "inside": PERIOD_START + timedelta(hours=4),
                "due": DUE,
            },
        )
    await fire(sessions, due_timer(subscription, sponsor))
    (digest,) = await digests_to(sessions, sponsor, subscription["email"])
    assert digest.data["campaigns"] == [
        {
            "name": "Spring launch", "sent": 3, "opens": 3, "clicks": 1,
            "total_sent": 100, "total_opened": 30, "total_clicked": 5,
        }
    ]  # fmt: skip


async def hold(
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    type_id: str,
    to: str,
    created_at: datetime,
    **data: Any,
) -> uuid.UUID:
    """A message as preferences leave it when the recipient wants their alerts daily."""
    message_id = uuid.uuid4()
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO messages (id, sponsor_id, type_id, type_key, to_email, data, status,"
                " created_at) SELECT :id, :sponsor, id, key, :to, CAST(:data AS jsonb), 'held', :at"
                " FROM message_types WHERE id = :type_id"
            ),
            {
                "id": message_id,
                "sponsor": sponsor,
                "type_id": type_id,
                "to": to,
                "data": orjson.dumps(data).decode(),
                "at": created_at,
            },
        )
    return message_id


async def test_held_alerts_are_told_in_the_digest_and_marked_digested(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    created = await client.post(
        f"/api/v1/sponsors/{sponsor}/message-types",
        json={
            "key": "deal.alert",
            "category": "notification",
            "subject": "Deal moved: {{ attributes.deal }}",
            "html_body": "<p>{{ attributes.deal }}</p>",
            "variables": [{"name": "deal", "type": "string"}],
        },
        headers=token(sponsor),
    )
    assert created.status_code == 201, created.text
    type_id = created.json()["id"]
    at = PERIOD_START + timedelta(hours=4)
    first = await hold(sessions, sponsor, type_id, subscription["email"], at, deal="Acme")
    later = at + timedelta(minutes=5)
    await hold(sessions, sponsor, type_id, subscription["email"], later, deal="Globex")
    other = await hold(sessions, sponsor, type_id, "someone@sponsor.example", at, deal="Initech")
    await fire(sessions, due_timer(subscription, sponsor))

    (digest,) = await digests_to(sessions, sponsor, subscription["email"])
    assert [m["subject"] for m in digest.data["held"]] == ["Deal moved: Acme", "Deal moved: Globex"]
    assert digest.data["held"][0]["line"].endswith("· deal.alert")
    url = f"/api/v1/sponsors/{sponsor}/messages"
    told = (await client.get(f"{url}/{first}", headers=token(sponsor))).json()
    assert told["status"] == "digested"
    assert [entry["type"] for entry in told["history"]] == ["queued", "digested"]
    async with sessions() as session:
        status = await session.scalar(
            text("SELECT status FROM messages WHERE id = :id"), {"id": other}
        )
    assert status == "held"  # another member's alerts wait for their own digest


async def test_a_member_who_opted_out_of_digests_gets_none_and_their_held_alerts_wait(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    member = subscription["email"]
    opted_out = await client.put(
        f"/api/v1/sponsors/{sponsor}/preferences/{member}",
        json={"digests": {"opted_out": True}},
        headers=token(sponsor),
    )
    assert opted_out.status_code == 200, opted_out.text
    created = await client.post(
        f"/api/v1/sponsors/{sponsor}/message-types",
        json={"key": "deal.alert", "category": "notification", "subject": "Deal moved",
              "html_body": "<p>moved</p>"},
        headers=token(sponsor),
    )  # fmt: skip
    held = await hold(sessions, sponsor, created.json()["id"], member, PERIOD_START)
    await add_lead(sessions, sponsor, PERIOD_START + timedelta(hours=1), intent_level="hot")
    await fire(sessions, due_timer(subscription, sponsor))

    assert await digests_to(sessions, sponsor, member) == []
    async with sessions() as session:
        status = await session.scalar(
            text("SELECT status FROM messages WHERE id = :id"), {"id": held}
        )
    assert status == "held"


def test_todays_and_tomorrows_appointments_are_the_members_calendar_days() -> None:
    # 23:30 UTC on 1 April is already 2 April in Berlin: "today" for a Berlin reader.
    late = {
        "appointment_id": "a",
        "start_at": datetime(2027, 4, 1, 23, 30, tzinfo=UTC),
        "time_zone": "UTC",
        "lead_email": "ada@customer.example",
        "details": {"title": "Late call"},
    }
    values = content.data(
        moment=datetime(2027, 4, 2, 6, tzinfo=UTC),
        zone="Europe/Berlin",
        leads=[],
        appointments=[late],
        campaigns=[],
        held=[],
    )
    days = {day["label"]: day["appointments"] for day in values["days"]}
    assert [a["time"] for a in days["today"]] == ["01:30"]
    assert date(2027, 4, 2).strftime("%A") in values["period"]


# The whole way ----------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
async def test_a_due_digest_reaches_the_member_through_the_timers_and_the_sender(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
    fake: FakeResend,
) -> None:
    subscription = await subscribe(client, sponsor, token(sponsor))
    tomorrow = datetime.now(BERLIN).date() + timedelta(days=1)
    noon = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 12, tzinfo=BERLIN)
    await add_appointment(sessions, sponsor, noon, "Product demo")
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE timers SET due_at = now() WHERE key = :key"),
            {"key": logic.timer_key(uuid.UUID(subscription["id"]))},
        )

    (email,) = await eventually(lambda: _async(fake.messages_to(subscription["email"])))
    assert email.subject.startswith("Your digest for ")
    async with sessions() as session:
        due = await timers.due_at(session, [logic.timer_key(uuid.UUID(subscription["id"]))])
    (next_at,) = due.values()
    assert next_at > datetime.now(UTC)  # the next one is set
    (digest,) = await digests_to(sessions, sponsor, subscription["email"])
    assert digest.data["days"][1]["appointments"][0]["title"] == "Product demo"


async def _async(value: Any) -> Any:
    return value


@pytest.mark.usefixtures("workers")
async def test_an_alert_held_by_a_daily_preference_reaches_the_member_in_their_digest(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    token: Any,
    fake: FakeResend,
) -> None:
    headers = token(sponsor)
    subscription = await subscribe(client, sponsor, headers)
    member = subscription["email"]
    daily = await client.put(
        f"/api/v1/sponsors/{sponsor}/preferences/{member}",
        json={"alerts": {"frequency": "daily"}},
        headers=headers,
    )
    assert daily.status_code == 200, daily.text
    created = await client.post(
        f"/api/v1/sponsors/{sponsor}/message-types",
        json={
            "key": "deal.alert",
            "category": "notification",
            "subject": "Deal moved: {{ attributes.deal }}",
            "html_body": "<p>{{ attributes.deal }}</p>",
            "variables": [{"name": "deal", "type": "string"}],
        },
        headers=headers,
    )
    assert created.status_code == 201, created.text
    sent = await client.post(
        f"/api/v1/sponsors/{sponsor}/messages",
        json={"type": "deal.alert", "to": member, "data": {"deal": "Acme"}},
        headers=headers,
    )
    (alert_id,) = sent.json()["ids"]
    alert_url = f"/api/v1/sponsors/{sponsor}/messages/{alert_id}"

    async def alert_status(wanted: str) -> bool:
        found = (await client.get(alert_url, headers=headers)).json()
        return bool(found["status"] == wanted)

    await eventually(lambda: alert_status("held"))
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE timers SET due_at = now() WHERE key = :key"),
            {"key": logic.timer_key(uuid.UUID(subscription["id"]))},
        )

    (email,) = await eventually(lambda: _async(fake.messages_to(member)))
    assert email.subject.startswith("Your digest for ")  # the digest itself is not held
    (digest,) = await digests_to(sessions, sponsor, member)
    assert [m["subject"] for m in digest.data["held"]] == ["Deal moved: Acme"]
    assert await alert_status("digested")
