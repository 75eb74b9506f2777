"""Promotion and rollback of versions (analyst and above; audited)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends

from api.audit import audited
from api.auth import require
from api.db import ApiKey
from api.errors import ApiError
from api.routes.common import error_responses
from api.schemas import ActiveResponse, PromoteRequest
from api.state import Services, services
from gapmodel.registry import RegistryError

router = APIRouter(prefix="/v1", tags=["registry"])
log = logging.getLogger("api.registry")
Svc = Annotated[Services, Depends(services)]
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)


def warm(svc: Services, model: str) -> None:
    """Load the new active version so the next query answers at once."""
    try:
        svc.store.view(model)
    except ApiError as exc:
        log.error("cannot load the active version of %s: %s", model, exc.message)


@router.post("/models/{model}/promote", response_model=ActiveResponse,
             responses=WRITE_ERRORS)
def promote(model: str, body: PromoteRequest, svc: Svc,
            key: Annotated[ApiKey, Depends(require("analyst", "promote"))]
            ) -> ActiveResponse:
    """Make a version active (an atomic switch). A version that failed the convergence
    gate needs force and a reason (recorded); an approximate fit never qualifies."""
    with audited(svc.db, key, "promote", f"{model}/{body.version}") as outcome:
        svc.store.require_model(model)
        meta = svc.store.meta(body.version)
        if meta["model"] != model:
            raise ApiError(404, f"version {body.version} belongs to model "
                           f"'{meta['model']}', not '{model}'")
        if body.force and not meta["gate"]["passed"] and not body.reason.strip():
            raise ApiError(422, "a forced promotion needs a reason, which is recorded",
                           code="reason_required")
        previous = svc.store.registry.active_id(model)
        try:
            svc.store.registry.promote(body.version, force=body.force, reason=body.reason)
        except RegistryError as exc:
            raise ApiError(409, str(exc), code="not_promotable") from None
        outcome.detail = f"previous {previous}; forced {body.force}; {body.reason}"
    warm(svc, model)
    return ActiveResponse(model=model, active=body.version, previous=previous)


@router.post("/models/{model}/rollback", response_model=ActiveResponse,
             responses=WRITE_ERRORS)
def rollback(model: str, svc: Svc,
             key: Annotated[ApiKey, Depends(require("analyst", "rollback"))]
             ) -> ActiveResponse:
    """Re-activate the version that was active before the current one."""
    with audited(svc.db, key, "rollback", model) as outcome:
        svc.store.require_model(model)
        previous = svc.store.registry.active_id(model)
        try:
            target = svc.store.registry.rollback(model)
        except RegistryError as exc:
            raise ApiError(409, str(exc), code="no_rollback") from None
        outcome.detail = f"from {previous} to {target}"
    warm(svc, model)
    return ActiveResponse(model=model, active=target, previous=previous)
