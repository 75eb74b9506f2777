"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import require
from api.db import ApiKey
from api.routes.common import error_responses
from api.schemas import Health, Ready
from api.state import Services, services

router = APIRouter(tags=["health"])
Svc = Annotated[Services, Depends(services)]


@router.get("/health", response_model=Health)
def health() -> Health:
    """The process answers (liveness)."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready,
            responses={503: {"model": Ready, "description": "no active version loaded"}})
def ready(svc: Svc) -> Response:
    """200 once at least one model's active version is loaded, else 503."""
    models = svc.store.active_loaded()
    if not models:
        svc.store.preload()
        models = svc.store.active_loaded()
    body = Ready(status="ready" if models else "not ready", models=models)
    return JSONResponse(body.model_dump(), status_code=200 if models else 503)


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
    **error_responses(401)})
def metrics(_: Annotated[ApiKey, Depends(require("viewer"))], svc: Svc) -> Response:
    """Request counts and latencies by route, versions loaded, fit jobs by outcome."""
    svc.metrics.loaded.set(len(svc.store.loaded()))
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
