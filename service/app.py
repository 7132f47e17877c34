"""The FastAPI application: ``create_app()`` wires settings, database, Kafka and routes."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.types import Receive, Scope, Send

from schemas.http import ErrorBody
from service import kafka
from service.appointments.api import router as appointment_pages_router
from service.appointments.links import Links
from service.audiences.api import router as audiences_router
from service.campaigns.api import router as campaigns_router
from service.db import create_engine, session_factory
from service.digests.api import router as digests_router
from service.http import install_error_handlers
from service.leads.api import router as leads_router
from service.limits.api import RateLimited
from service.limits.body import BodyLimits
from service.logs import RequestContext
from service.messages.admin_api import router as message_types_admin_router
from service.messages.api import router as messages_router
from service.messages.stats_api import router as message_stats_router
from service.preferences.api import router as preferences_router
from service.preferences.page import router as preferences_page_router
from service.reports.api import public_router as reports_page_router
from service.reports.api import router as reports_router
from service.scrape import install_metrics_route, start_metrics_port
from service.settings import Settings, get_settings
from service.sponsors.api import router as sponsors_router
from service.startup import wait_for_dependencies
from service.stats.api import router as stats_router
from service.suppressions.api import router as suppressions_router
from service.templates import budget
from service.templates.api import public_router as view_router
from service.templates.api import router as templates_router
from service.tracking.api import router as tracking_router
from service.tracking.emitter import Emitter
from service.tracking.fastpath import TrackingFastPath, TrackingHub
from service.triggers.api import router as triggers_router
from service.webhooks.api import router as webhooks_router
from service.webhooks.sendgrid import router as sendgrid_webhooks_router

_ERRORS = {
    400: "the request is malformed (e.g. a tampered cursor)",
    401: "no valid bearer token",
    403: "the token may not act for this sponsor or lacks the scope",
    404: "no such resource",
    409: "the resource is not in a state that allows this",
    413: "the body is larger than API_MAX_BODY_MB",
    422: "a field is invalid, too long, or the JSON nests too deep; `field` names it",
    429: "a per-sponsor rate limit was reached; see the retry-after header",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in _ERRORS.items()
}


class CampaignService(FastAPI):
    """The API; pixel and click are answered before FastAPI's own per-request work.

    FastAPI's ``__call__`` and Starlette's middleware stack cost more per
    request than the tracking handlers themselves, so the hot routes are served
    in front of them (see ``service/tracking/fastpath.py``).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front = TrackingFastPath(super().__call__, self.state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application: routers, middleware, error handlers and health routes."""
    settings = settings or get_settings()
    app = CampaignService(
        title="campaign-service",
        version="1.0.0",
        summary="Kafka-driven email campaigns for sponsors' leads",
        lifespan=_lifespan(settings),
    )
    app.state.settings = settings
    budget.configure(settings.template_max_output_chars, settings.template_render_seconds)
    install_error_handlers(app)
    app.add_middleware(BodyLimits, settings=settings)
    app.add_middleware(RequestContext)
    _include_routers(app)
    install_metrics_route(app, settings)
    _add_health_routes(app, settings)
    return app


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open the database, Kafka and tracking pieces at startup; close them at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, name="campaign-service-api")
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        await wait_for_dependencies(settings, engine)
        app.state.producer = kafka.Producer(settings)
        emitter = Emitter(settings)
        app.state.tracking = TrackingHub(settings, engine, emitter)
        app.state.appointment_links = Links.from_settings(settings)
        # A full collection walks the whole heap (~100 ms with FastAPI and pydantic
        # loaded), a pause every request in flight waits for: what startup built stays
        # for the life of the process, so keep it out of the collector's walks.
        gc.collect()
        gc.freeze()
        scrape = start_metrics_port(app, settings)
        try:
            yield
        finally:
            if scrape is not None:
                await asyncio.to_thread(scrape.stop)
            await asyncio.to_thread(emitter.close)
            await asyncio.to_thread(app.state.producer.close)
            await engine.dispose()

    return lifespan


def _include_routers(app: FastAPI) -> None:
    limited: dict[str, Any] = {"dependencies": [RateLimited], "responses": ERROR_RESPONSES}
    app.include_router(sponsors_router, **limited)
    app.include_router(leads_router, **limited)
    app.include_router(campaigns_router, **limited)
    app.include_router(templates_router, **limited)
    app.include_router(stats_router, **limited)
    app.include_router(audiences_router, **limited)
    app.include_router(suppressions_router, **limited)
    app.include_router(messages_router, **limited)
    app.include_router(message_stats_router, **limited)
    app.include_router(message_types_admin_router, **limited)
    app.include_router(reports_router, **limited)
    app.include_router(triggers_router, **limited)
    app.include_router(preferences_router, **limited)
    app.include_router(digests_router, **limited)
    # Public routes: signed tokens or webhook signatures, no bearer token.
    app.include_router(view_router)
    app.include_router(tracking_router)
    app.include_router(appointment_pages_router)
    app.include_router(reports_page_router)
    app.include_router(preferences_page_router)
    app.include_router(webhooks_router)
    app.include_router(sendgrid_webhooks_router)


def _add_health_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """The database and Kafka answer; 503 names what is missing."""
        checks: dict[str, str] = {}
        try:
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            await asyncio.to_thread(kafka.ping, settings)
            checks["kafka"] = "ok"
        except Exception as exc:
            checks["kafka"] = f"unavailable: {type(exc).__name__}"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )
