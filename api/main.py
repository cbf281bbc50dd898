"""The FastAPI app: `create_app()` (run with `uvicorn --factory api.main:create_app`).

It migrates the database, starts the executor (the local workers run in this process
unless `COMPRESSOR_EMBEDDED_WORKERS=false`) and a lease reaper, and serves the API under
/v1, /healthz, /metrics, the OpenAPI document and the dashboard.
"""

from __future__ import annotations

import logging
from functools import partial
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from service.db.database import Database
from api.errors import install_error_handlers
from api.key_cache import KeyCache
from api.limits import BodySizeLimit
from api.rendered_jobs import RenderedJobs
from api.metrics import JobsCollector
from api.routes import artifacts, catalog, health, jobs, models
from service.settings import Settings
from service.storage import open_store
from workers.executor import Executor, make_executor
from workers.checkpoints import discard_checkpoints
from workers.maintenance import LeaseReaper

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
log = logging.getLogger("compressor.api")


def create_app(settings: Settings | None = None, executor: Executor | None = None) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.database_url)
    executor = executor or make_executor(settings, db, embedded_workers=settings.embedded_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.migrate()
        dispatch = executor.submit if executor.name == "celery" else None
        reaper = LeaseReaper(db, settings.poll_s, dispatch, ended=partial(discard_checkpoints, settings))
        executor.start()
        reaper.start()
        log.info("compressor API up: database %s, executor %s",
                 db.engine.url.render_as_string(hide_password=True), executor.name)
        try:
            yield
        finally:
            reaper.stop()
            executor.stop()
            db.dispose()

    app = FastAPI(
        title="compressor", version="1", lifespan=lifespan,
        description="Compress causal LMs: submit a job (a model and a recipe), follow it, "
                    "download the checkpoint and its report.",
    )
    app.state.settings, app.state.db, app.state.executor = settings, db, executor
    app.state.artifact_store = open_store(settings.artifacts_url, settings.artifacts_dir)
    app.state.key_cache = KeyCache(settings.key_cache_s)
    app.state.rendered_jobs = RenderedJobs()
    app.state.metrics_registry = CollectorRegistry()
    app.state.metrics_registry.register(JobsCollector(db))
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    for module in (jobs, models, artifacts, catalog, health):
        app.include_router(module.router)
    if settings.dashboard and DASHBOARD_DIR.is_dir():
        app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/dashboard/")

    return app
