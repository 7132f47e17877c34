"""The FastAPI application: ``create_app()`` wires settings, database, Kafka and routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service import kafka
from service.audiences.api import router as audiences_router
from service.campaigns.api import router as campaigns_router
from service.db import create_engine, session_factory
from service.http import install_error_handlers
from service.leads.api import router as leads_router
from service.settings import Settings, get_settings
from service.sponsors.api import router as sponsors_router
from service.suppressions.api import router as suppressions_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.producer = kafka.Producer(settings)
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.producer.close)
            await engine.dispose()

    app = FastAPI(
        title="campaign-service",
        version="1.0.0",
        summary="Kafka-driven email campaigns for sponsors' leads",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(sponsors_router)
    app.include_router(leads_router)
    app.include_router(campaigns_router)
    app.include_router(audiences_router)
    app.include_router(suppressions_router)

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

    return app
