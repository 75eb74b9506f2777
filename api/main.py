"""The app factory: ``create_app(settings)``; ``api.main:app`` for uvicorn.

    uvicorn api.main:app            # or: gapmodel serve
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from api import dashboard, errors
from api.db import Database
from api.jobs import JobRunner
from api.metrics import Metrics, MetricsMiddleware
from api.middleware import BodySizeLimit, RequestLog
from api.routes import admin, datasets, fits, health, models, queries, registry
from api.settings import Settings
from api.state import Services
from api.store import ModelStore
from gapmodel import __version__
from gapmodel.registry import Registry

log = logging.getLogger("api")

DESCRIPTION = """Estimates of undiagnosed disease from fitted gapmodel versions.

Every route except `/health`, `/ready` and the documentation needs an API key
(`X-API-Key: <key>` or `Authorization: Bearer <key>`). Roles: viewer < outreach <
analyst < admin. Errors have one shape: `{"error": {"code", "message", "details"}}`.
Counts of 1 to 7 people are withheld, and other counts rounded to 5, for roles below
analyst (configurable per deployment)."""


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("api").setLevel(level.upper())


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured app; nothing is loaded until its lifespan starts."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    metrics = Metrics()
    svc = Services(settings=settings, db=db,
                   store=ModelStore(Registry(settings.registry), settings.cache_versions),
                   jobs=JobRunner(settings, db, metrics), metrics=metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc.jobs.recover()
        if settings.preload:
            loaded = await run_in_threadpool(svc.store.preload)
            log.info("serving %d active version(s): %s", len(loaded),
                     ", ".join(loaded) or "none")
        yield
        svc.jobs.shutdown()
        db.dispose()

    app = FastAPI(title="gapmodel", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.services = svc
    errors.install(app)
    for router in (health.router, models.router, queries.router, registry.router,
                   datasets.router, fits.router, admin.router):
        app.include_router(router)
    dashboard.install(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    app.add_middleware(RequestLog)
    return app


def __getattr__(name: str) -> FastAPI:
    """``api.main:app``: the app from the environment's settings, made on first use."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
