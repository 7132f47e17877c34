"""Every Prometheus metric of the service, defined once so any module imports and updates them.

The API serves them on ``/metrics``; each worker on its own small HTTP server
(``WORKER_METRICS_HOST``/``WORKER_METRICS_PORT``), which also answers the
probes on ``/healthz``. With ``PROMETHEUS_MULTIPROC_DIR`` set (several API
processes behind one port, ``campaignctl api --workers N``), every process
writes its samples there and a scrape merges them.

Labels stay low-cardinality: provider names, error reasons (codes, not
messages), campaign statuses and tracking kinds; never campaign or lead ids.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "campaign"

# ---------------------------------------------------------------- sender
MESSAGES_SENT = Counter(f"{PREFIX}_messages_sent", "Messages the provider accepted.", ["provider"])
MESSAGES_FAILED = Counter(
    f"{PREFIX}_messages_failed",
    "Messages that failed for good, by reason code.",
    ["provider", "reason"],
)
BATCH_DURATION = Histogram(
    f"{PREFIX}_batch_duration_seconds",
    "Time to send and record one batch.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
SEND_STAGE = Histogram(
    f"{PREFIX}_send_stage_seconds",
    "Time one batch spends in each sender stage: load (database read), render, "
    "send (pacing and provider), record (database write).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PACING_RATE = Gauge(
    f"{PREFIX}_pacing_rate_per_second",
    "Provider requests per second this sender may make now, by lane (campaigns, messages).",
    ["lane"],
    multiprocess_mode="livesum",
)
PROVIDER_QUOTA_EXHAUSTED = Gauge(
    f"{PREFIX}_provider_quota_exhausted",
    "1 while the provider refuses sends for an exhausted quota (messages wait on timers).",
    ["provider"],
    multiprocess_mode="max",
)

# ---------------------------------------------------------------- provider
PROVIDER_LATENCY = Histogram(
    f"{PREFIX}_provider_request_seconds",
    "Latency of one provider request, by outcome.",
    ["provider", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_RATE_LIMITED = Counter(
    f"{PREFIX}_provider_rate_limited", "429 answers from the provider.", ["provider"]
)

# ---------------------------------------------------------------- planner, relay
PLANNER_DURATION = Histogram(
    f"{PREFIX}_planner_duration_seconds",
    "Time to plan one campaign (delivery rows and first batches).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
OUTBOX_BACKLOG = Gauge(
    f"{PREFIX}_outbox_backlog",
    "Outbox rows not yet published, as last seen by the relay leader.",
    multiprocess_mode="max",
)
OUTBOX_PUBLISHED = Counter(
    f"{PREFIX}_outbox_published", "Outbox rows the relay published (the writers' fast path missed)."
)
RECONCILER_ACTIONS = Counter(
    f"{PREFIX}_reconciler_actions", "Campaigns the reconciler re-drove, by status.", ["status"]
)

# ---------------------------------------------------------------- ingester, tracking (hooks)
INGESTER_BATCH_SIZE = Histogram(
    f"{PREFIX}_ingester_batch_size",
    "Events per ingester batch.",
    buckets=(1, 5, 10, 50, 100, 500, 1000, 5000),
)
INGESTER_DELAY = Histogram(
    f"{PREFIX}_ingester_delay_seconds",
    "Time from an event's occurrence to its ingestion.",
    buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
PROVIDER_EVENTS_UNMATCHED = Counter(
    f"{PREFIX}_provider_events_unmatched",
    "Provider events kept without a delivery, by why none matched (no_delivery_tag, "
    "unknown_delivery, campaign_mismatch, email_id_mismatch).",
    ["provider", "reason"],
)
TRACKING_HITS = Counter(
    f"{PREFIX}_tracking_hits", "Public tracking hits, by kind (open, click, unsubscribe).", ["kind"]
)

# ---------------------------------------------------------------- timers
TIMER_LATENESS = Histogram(
    f"{PREFIX}_timer_lateness_seconds",
    "Time from a timer's due time to its firing, by kind.",
    ["kind"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
)

# ---------------------------------------------------------------- every consumer
DEAD_LETTERS = Counter(
    f"{PREFIX}_dead_letters",
    "Messages sent to the dead-letter topic, by consumer group and reason class.",
    ["group", "reason"],
)

# ---------------------------------------------------------------- API
API_RATE_LIMITED = Counter(
    f"{PREFIX}_api_rate_limited", "API requests answered 429, by limit.", ["limit"]
)


class CampaignStatusCollector(Collector):
    """``campaign_campaigns{status}``: read on scrape with one cheap grouped query."""

    def __init__(self, count_by_status: Callable[[], dict[str, int]]) -> None:
        self.count_by_status = count_by_status

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(f"{PREFIX}_campaigns", "Campaigns by status.", labels=["status"])
        try:
            counts = self.count_by_status()
        except Exception:
            counts = {}
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        yield family


def scrape_registry() -> CollectorRegistry:
    """The registry a scrape reads: this process's, or every process's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render(extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of every metric (plus collectors read on scrape)."""
    output = generate_latest(scrape_registry())
    if extra:
        registry = CollectorRegistry(auto_describe=False)
        for collector in extra:
            registry.register(collector)
        output += generate_latest(registry)
    return output


class MetricsServer:
    """The worker's HTTP endpoint: ``/metrics`` and ``/healthz`` (for probes)."""

    def __init__(
        self,
        host: str,
        port: int,
        healthy: Callable[[], bool],
        extra: Iterable[Collector] = (),
    ) -> None:
        self.healthy = healthy
        extra_collectors = list(extra)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._answer(200, render(extra_collectors), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    ok = outer.healthy()
                    body = b'{"status":"ok"}' if ok else b'{"status":"stopping"}'
                    self._answer(200 if ok else 503, body, "application/json")
                else:
                    self._answer(404, b"not found", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the logs

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
