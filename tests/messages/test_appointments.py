"""Appointment emails with calendar invites, and the durable timers behind their reminders.

The invite is checked by parsing it back with ``icalendar``; the rules by calling
``service.appointments.logic.handle`` on the real database; one booking goes the
whole way: ``appointments.v1`` → the appointments role → ``message-sender`` → the
fake Resend, with the invite attached.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRescheduled,
    appointment_events,
)
from schemas.events import TOPIC_APPOINTMENTS
from service import metrics
from service.appointments import emails, followups, logic
from service.appointments.invite import Invite, ics
from service.appointments.links import Links
from service.appointments.outgoing import Config
from service.kafka import Producer
from service.models import Message
from service.settings import Settings
from service.timers import repository as timers
from service.timers.logic import fire_due
from service.timers.repository import DueTimer
from service.tracking.tokens import TokenSigner
from tests.conftest import eventually
from tests.fakes.resend_server import FakeResend

BERLIN = ZoneInfo("Europe/Berlin")
# The rules' settings: links signed with a secret of this module's own (a link's
# signature is checked in tests/messages/test_appointment_links.py).
CONFIG = Config(
    Links(TokenSigner(b"appointments-test-secret-0123"), "https://campaigns.example"),
    feedback_delay=timedelta(hours=2),
)
# Booked in March, before clocks go forward on 28 March 2027, for April.
BOOKED_AT = datetime(2027, 3, 1, 12, tzinfo=UTC)
APRIL_NINE = datetime(2027, 4, 1, 9, tzinfo=BERLIN)


def event(
    kind: type[AppointmentBooked | AppointmentRescheduled | AppointmentCancelled],
    sponsor_id: str,
    appointment_id: str,
    start: datetime = APRIL_NINE,
    **overrides: Any,
) -> AppointmentEvent:
    values: dict[str, Any] = {
        "appointment_id": appointment_id,
        "sponsor_id": sponsor_id,
        "title": "Product demo",
        "start": start,
        "end": start + timedelta(minutes=45),
        "time_zone": "Europe/Berlin",
        "lead": {"email": "ada@customer.example", "name": "Ada Lovelace"},
        "host": {"email": "rep@sponsor.example", "name": "Sam Rep"},
        "join_url": "https://meet.example/demo-1",
        "notes": "Bring your questions.",
        **overrides,
    }
    return kind(**values)


def parsed(content: bytes) -> tuple[icalendar.Calendar, icalendar.cal.Component]:
    calendar = icalendar.Calendar.from_ical(content)
    (vevent,) = calendar.walk("VEVENT")
    return calendar, vevent


# The invite on its own --------------------------------------------------------


def berlin_invite(sequence: int = 0) -> Invite:
    return Invite(
        uid="demo-1.sp@appointments.campaign-service",
        sequence=sequence,
        title="Product demo",
        start=APRIL_NINE,
        end=APRIL_NINE + timedelta(minutes=45),
        time_zone="Europe/Berlin",
        organizer_email="rep@sponsor.example",
        organizer_name="Sam Rep",
        attendee_email="ada@customer.example",
        attendee_name="Ada Lovelace",
        join_url="https://meet.example/demo-1",
    )


def test_a_nine_oclock_berlin_meeting_booked_before_the_dst_change_reads_nine_in_the_invite() -> (
    None
):
    calendar, vevent = parsed(ics(berlin_invite(), method="REQUEST", stamp=BOOKED_AT))
    start = vevent.decoded("dtstart")
    assert (start.hour, start.minute) == (9, 0)
    assert vevent["dtstart"].params["TZID"] == "Europe/Berlin"
    assert start.utcoffset() == timedelta(hours=2)  # summer time, unlike the day it was booked
    (zone,) = calendar.walk("VTIMEZONE")
    assert zone["TZID"] == "Europe/Berlin"
    assert calendar["METHOD"] == "REQUEST"


def test_the_invite_parses_back_with_its_attendee_organizer_url_and_alarm() -> None:
    _, vevent = parsed(ics(berlin_invite(), method="REQUEST", stamp=BOOKED_AT))
    assert str(vevent["attendee"]) == "mailto:ada@customer.example"
    assert vevent["attendee"].params["CN"] == "Ada Lovelace"
    assert str(vevent["organizer"]) == "mailto:rep@sponsor.example"
    assert str(vevent["url"]) == "https://meet.example/demo-1"
    assert vevent["uid"] == "demo-1.sp@appointments.campaign-service"
    assert vevent["sequence"] == 0
    (alarm,) = vevent.walk("VALARM")
    assert alarm["action"] == "DISPLAY"


def test_the_email_shows_the_time_in_the_recipients_zone_with_calendar_links() -> None:
    invite = berlin_invite()
    in_berlin = emails.data(invite, "Europe/Berlin")
    assert in_berlin["when"] == "Thursday 1 April 2027, 09:00 (CEST, Europe/Berlin)"
    assert "03:00" in emails.data(invite, "America/New_York")["when"]
    assert in_berlin["google_url"].startswith("https://calendar.google.com/")
    assert "20270401T070000Z" in in_berlin["google_url"]
    assert in_berlin["outlook_url"].startswith("https://outlook.office.com/")


def test_an_event_with_an_unknown_time_zone_is_refused_by_the_contract() -> None:
    body = event(AppointmentBooked, "sp", "a").model_dump(mode="json")
    body["time_zone"] = "Europe/Atlantis"
    with pytest.raises(ValueError):
        appointment_events.validate_python(body)


# The rules on the real database ------------------------------------------------


async def apply(
    sessions: async_sessionmaker[AsyncSession], item: AppointmentEvent, now: datetime = BOOKED_AT
) -> None:
    async with sessions.begin() as session:
        await logic.handle(session, item, CONFIG, now=now)


async def sent_invites(
    sessions: async_sessionmaker[AsyncSession], sponsor_id: str, appointment_id: str
) -> list[tuple[str, icalendar.Calendar, icalendar.cal.Component]]:
    """(type key, calendar, event) of each appointment email queued, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(Message)
            .where(
                Message.sponsor_id == sponsor_id,
                Message.tags["appointment_id"].astext == appointment_id,
            )
            .order_by(Message.created_at, Message.tags["sequence"].astext)
        )
        result = []
        for row in rows:
            (attachment,) = row.attachments
            calendar, vevent = parsed(base64.b64decode(attachment["content"]))
            result.append((row.type_key or "", calendar, vevent))
        return result


async def reminders(
    sessions: async_sessionmaker[AsyncSession], sponsor_id: str, appointment_id: str
) -> dict[str, datetime]:
    keys = [f"appointment:{sponsor_id}:{appointment_id}:{name}" for name in ("24h", "1h")]
    async with sessions() as session:
        due = await timers.due_at(session, keys)
    return {key.rsplit(":", 1)[1]: at for key, at in due.items()}


async def test_a_booking_queues_a_confirmation_to_the_lead_with_a_request_invite(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    await apply(sessions, event(AppointmentBooked, sponsor, "demo-1"))
    ((type_key, calendar, vevent),) = await sent_invites(sessions, sponsor, "demo-1")
    assert type_key == emails.CONFIRMATION
    assert calendar["METHOD"] == "REQUEST"
    assert vevent.decoded("dtstart").hour == 9
    assert str(vevent["attendee"]) == "mailto:ada@customer.example"
    async with sessions() as session:
        message = await session.scalar(select(Message).where(Message.sponsor_id == sponsor))
    assert message is not None
    assert message.to_email == "ada@customer.example"
    assert message.data["when"].startswith("Thursday 1 April 2027, 09:00")
    assert message.attachments[0]["filename"] == "invite.ics"
    assert message.attachments[0]["content_type"] == "text/calendar; method=REQUEST"
    assert await reminders(sessions, sponsor, "demo-1") == {
        "24h": APRIL_NINE - timedelta(hours=24),
        "1h": APRIL_NINE - timedelta(hours=1),
    }


async def test_rescheduling_twice_keeps_the_uid_raises_the_sequence_and_moves_the_reminders(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    await apply(sessions, event(AppointmentBooked, sponsor, "demo-2"))
    later = APRIL_NINE + timedelta(days=1)
    await apply(sessions, event(AppointmentRescheduled, sponsor, "demo-2", start=later))
    assert (await reminders(sessions, sponsor, "demo-2"))["1h"] == later - timedelta(hours=1)
    latest = APRIL_NINE + timedelta(days=2, hours=5)
    await apply(sessions, event(AppointmentRescheduled, sponsor, "demo-2", start=latest))

    invites = await sent_invites(sessions, sponsor, "demo-2")
    assert [key for key, _, _ in invites] == [emails.CONFIRMATION, emails.UPDATE, emails.UPDATE]
    assert [vevent["sequence"] for _, _, vevent in invites] == [0, 1, 2]
    assert len({str(vevent["uid"]) for _, _, vevent in invites}) == 1
    assert [vevent.decoded("dtstart") for _, _, vevent in invites] == [APRIL_NINE, later, latest]
    assert await reminders(sessions, sponsor, "demo-2") == {
        "24h": latest - timedelta(hours=24),
        "1h": latest - timedelta(hours=1),
    }


async def test_a_cancellation_sends_a_cancel_invite_and_removes_the_reminders(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    await apply(sessions, event(AppointmentBooked, sponsor, "demo-3"))
    await apply(sessions, event(AppointmentCancelled, sponsor, "demo-3"))

    invites = await sent_invites(sessions, sponsor, "demo-3")
    key, calendar, vevent = invites[-1]
    assert key == emails.CANCELLATION
    assert calendar["METHOD"] == "CANCEL"
    assert vevent["status"] == "CANCELLED"
    assert vevent["sequence"] == 1
    assert vevent["uid"] == invites[0][2]["uid"]
    assert await reminders(sessions, sponsor, "demo-3") == {}


async def test_a_booking_for_two_hours_from_now_gets_the_one_hour_reminder_only(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    now = datetime.now(UTC)
    start = now + timedelta(hours=2)
    await apply(sessions, event(AppointmentBooked, sponsor, "soon", start=start), now=now)
    assert await reminders(sessions, sponsor, "soon") == {"1h": start - timedelta(hours=1)}


async def test_a_booking_for_an_hour_from_now_gets_no_reminder(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    now = datetime.now(UTC)
    start = now + timedelta(hours=1)
    await apply(sessions, event(AppointmentBooked, sponsor, "now-ish", start=start), now=now)
    assert await reminders(sessions, sponsor, "now-ish") == {}


async def test_an_event_delivered_twice_sends_one_email(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    booked = event(AppointmentBooked, sponsor, "demo-4")
    moved = event(AppointmentRescheduled, sponsor, "demo-4", start=APRIL_NINE + timedelta(days=1))
    cancelled = event(AppointmentCancelled, sponsor, "demo-4")
    for item in (booked, booked, moved, moved, cancelled, cancelled):
        await apply(sessions, item)
    invites = await sent_invites(sessions, sponsor, "demo-4")
    assert [vevent["sequence"] for _, _, vevent in invites] == [0, 1, 2]


# Timers ------------------------------------------------------------------------


async def _schedule_test_timer(
    sessions: async_sessionmaker[AsyncSession], kind: str, due: datetime
) -> str:
    key = f"{kind}:{uuid.uuid4()}"
    async with sessions.begin() as session:
        await timers.schedule(session, kind, key, due, {"n": 1})
    return key


async def test_a_due_timer_fires_once_and_a_crash_before_commit_fires_it_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    fired: list[str] = []

    async def record(session: AsyncSession, timer: DueTimer) -> None:
        fired.append(timer.key)

    key = await _schedule_test_timer(sessions, kind, datetime.now(UTC) - timedelta(seconds=5))
    with pytest.raises(RuntimeError):
        async with sessions.begin() as session:  # the process dies mid-pass
            assert await fire_due(session, {kind: record}) == 1
            raise RuntimeError("crash")
    async with sessions.begin() as session:
        assert await fire_due(session, {kind: record}) == 1
    async with sessions.begin() as session:
        assert await fire_due(session, {kind: record}) == 0
    assert fired == [key, key]  # once rolled back, then once for good


async def test_two_passes_at_once_never_claim_the_same_timer(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    for _ in range(20):
        await _schedule_test_timer(sessions, kind, datetime.now(UTC) - timedelta(seconds=1))
    fired: list[str] = []

    async def record(session: AsyncSession, timer: DueTimer) -> None:
        fired.append(timer.key)
        await asyncio.sleep(0.01)

    async def one_pass() -> int:
        async with sessions.begin() as session:
            return await fire_due(session, {kind: record}, limit=15)

    counts = await asyncio.gather(one_pass(), one_pass())
    assert sum(counts) == 20
    assert len(fired) == len(set(fired)) == 20


async def test_a_timer_not_yet_due_or_of_another_kind_is_left_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    kind, other = (f"test.{uuid.uuid4().hex[:8]}" for _ in range(2))
    await _schedule_test_timer(sessions, kind, datetime.now(UTC) + timedelta(hours=1))
    await _schedule_test_timer(sessions, other, datetime.now(UTC) - timedelta(hours=1))

    async def boom(session: AsyncSession, timer: DueTimer) -> None:
        raise AssertionError("fired")

    async with sessions.begin() as session:
        assert await fire_due(session, {kind: boom}) == 0


async def test_firing_observes_how_late_the_timer_was(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    await _schedule_test_timer(sessions, kind, now - timedelta(seconds=30))

    async def nothing(session: AsyncSession, timer: DueTimer) -> None:
        return None

    async with sessions.begin() as session:
        await fire_due(session, {kind: nothing}, now=now)
    sample = metrics.TIMER_LATENESS.labels(kind)._sum.get()
    assert 29.0 < sample < 31.0


async def test_a_reminder_for_a_cancelled_appointment_is_not_sent(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    await apply(sessions, event(AppointmentBooked, sponsor, "demo-5"))
    timer = DueTimer(
        0,
        followups.REMINDER_KIND,
        "k",
        APRIL_NINE - timedelta(hours=1),
        {"sponsor_id": sponsor, "appointment_id": "demo-5", "sequence": 0, "reminder": "1h"},
    )
    await apply(sessions, event(AppointmentCancelled, sponsor, "demo-5"))
    async with sessions.begin() as session:
        await followups.fire_reminders(session, CONFIG, [timer])
    async with sessions() as session:
        keys = (
            await session.scalars(
                text("SELECT type_key FROM messages WHERE sponsor_id = :s"), {"s": sponsor}
            )
        ).all()
    assert sorted(keys) == [emails.CANCELLATION, emails.CONFIRMATION]


async def test_a_reminder_for_a_past_appointment_is_not_sent(
    sessions: async_sessionmaker[AsyncSession], sponsor: str
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    await apply(sessions, event(AppointmentBooked, sponsor, "gone", start=past), now=past)
    timer = DueTimer(
        0,
        followups.REMINDER_KIND,
        "k",
        past - timedelta(hours=1),
        {"sponsor_id": sponsor, "appointment_id": "gone", "sequence": 0, "reminder": "1h"},
    )
    async with sessions.begin() as session:
        await followups.fire_reminders(session, CONFIG, [timer])
    async with sessions() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM messages WHERE sponsor_id = :s"), {"s": sponsor}
        )
    assert count == 1  # the confirmation alone


# The whole way ------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
async def test_a_booking_published_upstream_reaches_the_lead_with_the_invite_attached(
    sessions: async_sessionmaker[AsyncSession],
    sponsor: str,
    fake: FakeResend,
    migrated: Settings,
) -> None:
    lead = f"{uuid.uuid4().hex[:8]}@customer.example"
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    booked = event(
        AppointmentBooked,
        sponsor,
        "e2e",
        start=start,
        lead={"email": lead, "name": "Ada", "time_zone": "Europe/Berlin"},
    )
    producer = Producer(migrated)
    try:
        await producer.send([(TOPIC_APPOINTMENTS, "e2e", booked.to_bytes())])
    finally:
        producer.close()

    (confirmation,) = await eventually(lambda: _async(fake.messages_to(lead)))
    assert confirmation.subject.startswith("Confirmed: Product demo")
    (attachment,) = confirmation.attachments
    assert attachment["filename"] == "invite.ics"
    assert attachment["content_type"] == "text/calendar; method=REQUEST"
    _, vevent = parsed(base64.b64decode(attachment["content"]))
    assert str(vevent["attendee"]) == f"mailto:{lead}"
    assert vevent.decoded("dtstart") == start

    # An hour passes: the 1 h reminder falls due and the timers role sends it, once.
    assert set(await reminders(sessions, sponsor, "e2e")) == {"1h"}
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE timers SET due_at = now() WHERE key = :key"),
            {"key": f"appointment:{sponsor}:e2e:1h"},
        )
    reminder = await eventually(
        lambda: _async([m for m in fake.messages_to(lead) if m.subject.startswith("Reminder")])
    )
    await asyncio.sleep(2)
    assert len(reminder) == 1
    assert "in one hour" in reminder[0].subject


async def _async(value: Any) -> Any:
    return value
