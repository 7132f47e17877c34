"""How Prometheus reaches the API's metrics: ``/metrics`` behind an optional token, or a port.

``METRICS_TOKEN`` set: the API's ``/metrics`` wants ``Authorization: Bearer
<token>`` (401 otherwise), so the figures are not public where the API is.
``METRICS_PORT`` set: the metrics are served on that port alone (host
``METRICS_HOST``), which a network policy can keep inside the cluster, and the
API's own ``/metrics`` route is not there at all. With several API processes
the first to bind the port serves it; the others' samples reach it through
``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.campaigns import reconciler_repository
from service.errors import Unauthorized
from service.settings import Settings

log = logging.getLogger(__name__)


async def _campaign_counts(app: FastAPI) -> dict[str, int]:
    try:
        async with app.state.sessions() as session:
            return await reconciler_repository.count_by_status(session)
    except Exception:
        return {}  # the process metrics still answer while the database is away


def install_metrics_route(app: FastAPI, settings: Settings) -> None:
    """The API's ``/metrics``, unless the metrics have a port of their own."""
    if settings.metrics_port:
        return
    token = settings.metrics_token

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        """Prometheus metrics of this process (every process with PROMETHEUS_MULTIPROC_DIR)."""
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            expected = token.get_secret_value().encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), expected
            ):
                raise Unauthorized("invalid_metrics_token", "send 'Authorization: Bearer <token>'")
        counts = await _campaign_counts(request.app)
        body = metrics.render([metrics.CampaignStatusCollector(lambda: counts)])
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def start_metrics_port(app: FastAPI, settings: Settings) -> metrics.MetricsServer | None:
    """Serve the metrics on ``METRICS_PORT`` (call inside the running event loop)."""
    if not settings.metrics_port:
        return None
    loop = asyncio.get_running_loop()

    def counts() -> dict[str, int]:
        # Runs on the server's thread; the query runs on the API's loop and pool.
        future = asyncio.run_coroutine_threadsafe(_campaign_counts(app), loop)
        try:
            return future.result(timeout=5)
        except Exception:
            return {}

    try:
        server = metrics.MetricsServer(
            settings.metrics_host,
            settings.metrics_port,
            healthy=lambda: True,
            extra=[metrics.CampaignStatusCollector(counts)],
        ).start()
    except OSError as exc:
        log.warning("API metrics port not opened (another API process may hold it): %s", exc)
        return None
    return server
