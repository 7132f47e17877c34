"""Metrics on the API and the worker, structured logs, ``campaignctl status``."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import confluent_kafka
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from rich.console import Console
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devtools.status import run_status
from service import logs
from service.kafka import Producer
from service.models import Campaign
from service.settings import Settings
from service.stats import counters
from tests import factories
from tests.conftest import eventually
from tests.dead_letters import dead_letter
from worker.dead_letters import DeadLetters
from worker.main import start_metrics_server


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _send_small_campaign(client: httpx.AsyncClient, sponsor: str, token: Any) -> str:
    headers = token(sponsor)
    await factories.add_leads(
        client, sponsor, headers, factories.leads(30, domain=f"{sponsor}.example")
    )
    created = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns", headers=headers, json=factories.campaign()
    )
    assert created.status_code == 202, created.text
    campaign_id: str = created.json()["id"]

    async def sent() -> bool:
        stats = await client.get(
            f"/api/v1/sponsors/{sponsor}/campaigns/{campaign_id}/stats", headers=headers
        )
        return bool(stats.json()["status"] == "sent")

    await eventually(sent, within=90)
    return campaign_id


@pytest.mark.usefixtures("workers")
async def test_api_metrics_count_a_small_send(
    client: httpx.AsyncClient, sponsor: str, token: Any, json_logs: io.StringIO
) -> None:
    before = (await client.get("/metrics")).text
    campaign_id = await _send_small_campaign(client, sponsor, token)
    # The sender's own log lines carry the campaign, batch and sponsor they are about.
    lines = [orjson.loads(line) for line in json_logs.getvalue().splitlines()]
    finished = [line for line in lines if line["message"] == f"campaign {campaign_id} sent"]
    assert finished, [line["message"] for line in lines][-20:]
    assert finished[0]["campaign_id"] == campaign_id
    assert finished[0]["sponsor_id"] == sponsor
    assert isinstance(finished[0]["batch"], int)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    sent = _sample(text, "campaign_messages_sent_total", provider="resend")
    assert sent - _sample(before, "campaign_messages_sent_total", provider="resend") >= 30
    assert _sample(text, "campaign_campaigns", status="sent") >= 1
    assert _sample(text, "campaign_provider_request_seconds_count", provider="resend") >= 1
    assert _sample(text, "campaign_batch_duration_seconds_count") >= 1
    assert _sample(text, "campaign_planner_duration_seconds_count") >= 1
    assert _sample(text, "campaign_pacing_rate_per_second") > 0
    for hook in (
        "campaign_outbox_backlog",
        "campaign_provider_rate_limited_total",
        "campaign_reconciler_actions_total",
        "campaign_tracking_hits_total",
        "campaign_ingester_batch_size",
        "campaign_ingester_delay_seconds",
        "campaign_messages_failed_total",
    ):
        assert f"# TYPE {hook.removesuffix('_total')}" in text, hook


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_worker_serves_metrics_and_a_health_endpoint(migrated: Settings) -> None:
    settings = migrated.model_copy(update={"worker_metrics_port": _free_port()})
    stop = asyncio.Event()
    server = start_metrics_server(settings, stop)
    assert server is not None
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            assert "# TYPE campaign_messages_sent" in metrics.text
            assert (await http.get("/healthz")).status_code == 200
            stop.set()  # SIGTERM: probes see the worker going away
            assert (await http.get("/healthz")).status_code == 503
    finally:
        server.stop()


async def test_a_dead_letter_keeps_the_message_and_is_counted_by_group_and_reason(
    migrated: Settings,
) -> None:
    key = f"observed-{uuid.uuid4().hex}"
    original = confluent_kafka.Message(
        topic=migrated.topic("leads.v1"),
        partition=2,
        offset=41,
        key=key.encode(),
        value=b"{}",
        headers=[("traceparent", b"00-abc-01")],
    )
    labels = {"group": "observed", "reason": "invalid_value"}
    before = REGISTRY.get_sample_value("campaign_dead_letters_total", labels) or 0.0
    producer = Producer(migrated)
    try:
        await DeadLetters(producer).send(
            original, "observed", "invalid_value", OverflowError("date value out of range")
        )
    finally:
        producer.close()

    assert REGISTRY.get_sample_value("campaign_dead_letters_total", labels) == before + 1
    value, headers = await dead_letter(migrated, key)
    assert value == b"{}" and headers["traceparent"] == "00-abc-01"
    assert headers["dead-letter.error"] == "OverflowError: date value out of range"
    assert (headers["dead-letter.partition"], headers["dead-letter.offset"]) == ("2", "41")


def test_a_taken_metrics_port_costs_the_metrics_not_the_worker(migrated: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = migrated.model_copy(update={"worker_metrics_port": taken.getsockname()[1]})
        assert start_metrics_server(settings, asyncio.Event()) is None


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log line of the test, as the JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


async def test_json_log_lines_carry_the_request_id_and_sponsor(
    client: httpx.AsyncClient, sponsor: str, token: Any, json_logs: io.StringIO
) -> None:
    request_id = f"req-{uuid.uuid4().hex[:8]}"
    response = await client.get(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers={**token(sponsor), "X-Request-ID": request_id},
    )
    assert response.headers["x-request-id"] == request_id
    lines = [orjson.loads(line) for line in json_logs.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "service.access"]
    assert access, lines
    assert access[-1]["request_id"] == request_id
    assert access[-1]["sponsor_id"] == sponsor
    assert access[-1]["level"] == "info"
    assert "GET" in access[-1]["message"] and "200" in access[-1]["message"]


async def test_a_request_without_an_id_gets_one(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_emails_and_secrets_never_appear_in_clear(json_logs: io.StringIO) -> None:
    log = logging.getLogger("service.test")
    with logs.bound(campaign_id="c-1", batch=3):
        log.warning("bounce for Lead.Person@Example.com (Authorization: Bearer abc.def.ghi)")
        log.info("provider key re_live_0123456789 and api_key=hunter2")
    first, second = (orjson.loads(line) for line in json_logs.getvalue().splitlines())
    assert "Lead.Person@Example.com" not in first["message"]
    assert "L***@Example.com#" in first["message"]
    assert "abc.def.ghi" not in first["message"]
    assert (first["campaign_id"], first["batch"]) == ("c-1", 3)
    assert "re_live_0123456789" not in second["message"]
    assert "hunter2" not in second["message"]


def test_masked_emails_stay_recognisable_but_not_readable() -> None:
    masked = logs.mask_email("lead@example.com")
    assert masked.startswith("l***@example.com#")
    assert masked == logs.mask_email("LEAD@example.com".lower())
    assert masked != logs.mask_email("lead2@example.com")


async def test_status_once_shows_a_campaign_in_flight(
    client: httpx.AsyncClient,
    sponsor: str,
    token: Any,
    migrated: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    created = await client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        headers=token(sponsor),
        json=factories.campaign(name="Status view", draft=True),
    )
    campaign_id = uuid.UUID(created.json()["id"])
    async with sessions.begin() as session:  # a paused campaign, 4 of 10 sent, 1 failed
        await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(status="paused", total_recipients=10, queued_at=func.now())
        )
        await counters.bump(session, {(campaign_id, 0): {"sent": 4, "failed": 1, "pending": 5}})
    output = io.StringIO()
    console = Console(file=output, width=200, force_terminal=False)
    assert await asyncio.to_thread(run_status, migrated, once=True, console=console) == 0
    view = output.getvalue()
    assert "campaigns in flight" in view
    row = next(line for line in view.splitlines() if str(campaign_id)[:8] in line)
    assert sponsor in row
    assert "paused" in row
    assert re.search(r"\b5/10\b", view)


@pytest.mark.parametrize(("fmt", "json_lines"), [("json", True), ("auto", True), ("text", False)])
def test_campaignctl_logs_one_json_object_per_line_unless_in_a_terminal(
    fmt: str, json_lines: bool
) -> None:
    """``auto`` means JSON here: stderr is a pipe, not a terminal."""
    script = (
        "import logging; from service.logs import configure; "
        f"configure('INFO', '{fmt}'); "
        "logging.getLogger('service.x').info('sent to lead@example.com')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, timeout=60
    )
    (line,) = result.stderr.decode().splitlines()
    assert "lead@example.com" not in line
    if json_lines:
        entry = orjson.loads(line)
        assert entry["logger"] == "service.x" and entry["level"] == "info"
    else:
        assert line.split()[2] == "INFO"
