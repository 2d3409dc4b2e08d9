"""The app factory: ``create_app(settings)`` wires storage, registry and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from modelplane import __version__
from modelplane.api import errors, models
from modelplane.db import make_engine, upgrade
from modelplane.registry import RegistryService, SqlRegistryStore
from modelplane.settings import Settings
from modelplane.storage import BlobStore

log = logging.getLogger("modelplane")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway. Runs database migrations and clears stale upload temp files."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    blobs = BlobStore(settings.resolved_store_path())
    blobs.clean_tmp(min_age_seconds=60)
    registry = RegistryService(SqlRegistryStore(engine), blobs, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="modelplane",
        version=__version__,
        description="Self-hosted Model-as-a-Service platform.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.registry = registry
    errors.install(app)
    app.include_router(models.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    return app
