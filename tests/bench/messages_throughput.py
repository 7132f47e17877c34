"""One-to-one messages per second, through the API and straight through ``messages.v1``.

``BENCH_MESSAGES`` (default 20,000) messages go each way to the fake Resend
(its own process, no validation, no rate limit), sent by
``BENCH_MESSAGE_SENDERS`` message-sender processes (default 1) beside a relay:

- **api**: ``POST /messages`` with 100 messages a request, 8 requests at a time,
  to ``campaignctl api --workers 2``; timed from the first request until every
  message has its status (``sent``) recorded.
- **topic**: the rows written in one statement and their ``message.requested``
  events produced straight to ``messages.v1``; timed from the first event until
  every status is recorded.

The issue's target: 2,000 messages/s sustained each way.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from devtools.devstack import free_port
from schemas.events import TOPIC_MESSAGES
from schemas.messages import MessageRequested
from service.auth import mint_token
from service.db import create_engine
from service.kafka import Producer
from service.settings import Settings
from service.triggers.starter import THANK_YOU
from tests.bench._messages import SPONSOR, Bench, bench_stack, message_counts, wait_settled

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "20000"))
SENDERS = int(os.environ.get("BENCH_MESSAGE_SENDERS", "1"))
PER_REQUEST = 100
CLIENTS = 8


def _body(first: int) -> dict[str, Any]:
    return {
        "messages": [
            {"type": THANK_YOU, "to": f"m{n}@customer.example", "data": {"first_name": f"M{n}"}}
            for n in range(first, first + PER_REQUEST)
        ]
    }


async def _post_all(port: int, token: str, count: int) -> float:
    """Every request answered 202; the seconds the API took to accept them all."""
    url = f"http://127.0.0.1:{port}/api/v1/sponsors/{SPONSOR}/messages"
    headers = {"Authorization": f"Bearer {token}"}
    starts = iter(range(0, count, PER_REQUEST))
    started = time.monotonic()

    async def client() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            for first in starts:
                response = await http.post(url, headers=headers, json=_body(first))
                assert response.status_code == 202, response.text

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return time.monotonic() - started


async def _write_and_publish(settings: Settings, count: int) -> float:
    """Rows in one statement, events straight to the topic; seconds to produce them."""
    ids = [uuid.uuid4() for _ in range(count)]
    engine = create_engine(settings)
    async with engine.begin() as connection:
        await connection.execute(
            text("""
INSERT INTO messages (id, sponsor_id, type_id, type_key, to_email, data)
SELECT u.id, :s, t.id, t.key, 'q' || n || '@customer.example', '{"first_name": "Q"}'
FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS u(id, n)
CROSS JOIN (SELECT id, key FROM message_types WHERE sponsor_id = :s AND key = :k) t
"""),
            {"s": SPONSOR, "ids": ids, "k": THANK_YOU},
        )
    await engine.dispose()
    producer = Producer(settings)
    started = time.monotonic()
    events = [
        (TOPIC_MESSAGES, str(i), MessageRequested(message_id=i, sponsor_id=SPONSOR).to_bytes())
        for i in ids
    ]
    await producer.send(events)
    seconds = time.monotonic() - started
    await asyncio.to_thread(producer.close)
    return seconds


def _through_api(bench: Bench, count: int) -> dict[str, Any]:
    port = free_port()
    bench.api(port)
    token = mint_token(
        bench.settings, subject="bench", scopes=["campaigns:write"], sponsor_ids=[SPONSOR]
    )
    asyncio.run(_post_all(port, token, PER_REQUEST))  # warm-up: every group has joined
    before = sum(asyncio.run(message_counts(bench.settings)).values())
    wait_settled(bench.settings, before, 120)
    started = time.monotonic()
    accepted = asyncio.run(_post_all(port, token, count))
    done = wait_settled(bench.settings, before + count, 1800)
    return {
        "api_messages": count,
        "api_accept_per_second": round(count / accepted, 1),
        "api_recorded_per_second": round(count / (done - started), 1),
    }


def _through_topic(bench: Bench, count: int) -> dict[str, Any]:
    before = sum(asyncio.run(message_counts(bench.settings)).values())
    started = time.monotonic()
    produced = asyncio.run(_write_and_publish(bench.settings, count))
    done = wait_settled(bench.settings, before + count, 1800)
    return {
        "topic_messages": count,
        "topic_produce_seconds": round(produced, 2),
        "topic_recorded_per_second": round(count / (done - started), 1),
    }


def main() -> dict[str, Any]:
    with bench_stack("messages-throughput", rate_per_second=100_000) as bench:
        bench.worker("relay")
        for _ in range(SENDERS):
            bench.worker("message-sender")
        figures: dict[str, Any] = {"message_sender_processes": SENDERS}
        figures |= _through_api(bench, MESSAGES)
        figures |= _through_topic(bench, MESSAGES)
        counts = asyncio.run(message_counts(bench.settings))
        figures["all_sent"] = counts == {"sent": sum(counts.values())}
        figures["target_per_second"] = 2000
        return figures
