"""The app factory: ``create_app(settings)`` wires storage, registry and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from modelplane import __version__
from modelplane.api import (
    alerts,
    audit,
    datasets,
    deployments,
    errors,
    grants,
    health,
    jobs,
    models,
    oip,
    openai,
    openai_text,
    tenants,
    tfserving,
    usage,
)
from modelplane.api.fastpath import FastPath
from modelplane.api.gate import Gate
from modelplane.api.instrument import Instrument
from modelplane.api.limits import BodyLimits
from modelplane.auth import Auth
from modelplane.datasets import DatasetService, DatasetStore
from modelplane.db import make_engine, upgrade
from modelplane.jobs.runner import Runner
from modelplane.jobs.service import JobService
from modelplane.jobs.store import JobStore
from modelplane.monitoring import gauges
from modelplane.monitoring.alerts import wiring as alert_wiring
from modelplane.monitoring.metrics import Metrics
from modelplane.monitoring.usage import UsageMeter
from modelplane.registry import RegistryService, SqlRegistryStore
from modelplane.serving.dataplane import DataPlane
from modelplane.serving.manager import ModelManager
from modelplane.serving.store import DeploymentStore
from modelplane.settings import Settings
from modelplane.storage import BlobStore

log = logging.getLogger("modelplane")


def create_app(settings: Settings | None = None) -> Gate:
    """Build the gateway. Runs database migrations and clears stale upload temp files.

    The returned ASGI app checks keys, roles and quotas (when ``settings.auth``),
    serves inference calls on a fast path and hands every other request to the
    FastAPI app (``.app``).
    """
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    blobs = BlobStore.from_settings(settings)
    blobs.clean_tmp(min_age_seconds=60)
    registry = RegistryService(SqlRegistryStore(engine), blobs, settings)
    dataset_service = DatasetService(DatasetStore(engine), blobs, settings)
    manager = ModelManager(registry, DeploymentStore(engine), settings)
    dataplane = DataPlane(manager)
    auth = Auth(settings, engine)
    manager.grants = auth.grants
    job_store = JobStore(engine)
    runner = Runner(job_store, settings) if settings.job_slots > 0 else None
    # One metrics registry and one usage meter per app (tests build many apps per process).
    metrics = Metrics(enabled=settings.metrics)
    meter = UsageMeter(engine, settings.usage_flush_seconds, enabled=settings.metrics)
    manager.metrics = metrics
    gauges.install(metrics, manager.deployments, engine)
    if runner is not None:
        runner.usage, runner.metrics = meter.store, metrics
    alert_evaluator = alert_wiring.build(settings, engine, metrics, auth)  # not started yet

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await manager.start()
        meter.start()
        if runner is not None:
            runner.start()
        if settings.alerts:
            alert_evaluator.start()
        try:
            yield
        finally:
            try:
                await alert_evaluator.stop()  # first: its last webhooks go out meanwhile
                if runner is not None:
                    await asyncio.to_thread(runner.stop)
            finally:
                await manager.stop()
                await asyncio.to_thread(meter.stop)  # the last flush: a graceful stop loses none
                await auth.close()
                engine.dispose()

    app = FastAPI(
        title="modelplane",
        version=__version__,
        description="Self-hosted Model-as-a-Service platform.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.usage = meter
    app.state.engine = engine
    app.state.registry = registry
    app.state.manager = manager
    app.state.dataplane = dataplane
    app.state.auth = auth
    app.state.datasets = dataset_service
    app.state.alerts = alert_evaluator
    app.state.jobs = JobService(
        job_store, registry, dataset_service, settings, manager.store, auth.grants
    )
    errors.install(app)
    app.include_router(models.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(deployments.router)
    app.include_router(oip.router)
    app.include_router(openai.router)
    app.include_router(openai_text.router)
    app.include_router(tfserving.router)
    app.include_router(tenants.router)
    app.include_router(grants.router)
    app.include_router(audit.router)
    app.include_router(alerts.router)
    app.include_router(usage.router)
    app.include_router(health.router)

    # Each inference protocol plugs its hot routes into the fast path.
    fast = [
        oip.fast_routes(dataplane),
        tfserving.fast_routes(dataplane),
        openai.fast_routes(dataplane),
        openai_text.fast_routes(dataplane, meter, metrics),
    ]
    instrument = Instrument(metrics, meter) if settings.metrics else None
    # Body size and JSON depth caps on every FastAPI route; the fast path checks its own.
    limited = BodyLimits(
        app, settings.max_json_bytes, settings.max_infer_bytes, settings.max_json_depth
    )
    fastpath = FastPath(limited, fast, settings.max_infer_bytes, instrument)
    fastpath.max_depth = settings.max_json_depth
    return Gate(fastpath, app, auth)
