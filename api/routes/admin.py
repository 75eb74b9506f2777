"""Key management and the audit log (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from api.audit import audited
from api.auth import require
from api.db import ApiKey
from api.errors import ApiError
from api.routes.common import error_responses
from api.schemas import AuditOut, KeyCreate, KeyCreated, KeyInfo
from api.state import Services, services

router = APIRouter(prefix="/v1", tags=["admin"])
Svc = Annotated[Services, Depends(services)]
ERRORS = error_responses(401, 403, 404, 422)


@router.get("/keys", response_model=list[KeyInfo], responses=ERRORS)
def list_keys(_: Annotated[ApiKey, Depends(require("admin"))], svc: Svc) -> list[KeyInfo]:
    """Every key (never the key itself: only its first characters)."""
    return [KeyInfo.model_validate(k, from_attributes=True) for k in svc.db.api_keys()]


@router.post("/keys", status_code=201, response_model=KeyCreated, responses=ERRORS)
def create_key(body: KeyCreate, svc: Svc,
               key: Annotated[ApiKey, Depends(require("admin", "create key"))]
               ) -> KeyCreated:
    """A new key; the response is the only place the key is shown."""
    with audited(svc.db, key, "create key", f"{body.role}:{body.name}") as outcome:
        row, secret = svc.db.create_key(body.role, body.name)
        outcome.status = 201
        outcome.detail = f"key {row.id} ({row.prefix}...)"
    return KeyCreated(**KeyInfo.model_validate(row, from_attributes=True).model_dump(),
                      key=secret)


@router.delete("/keys/{key_id}", response_model=KeyInfo, responses=ERRORS)
def revoke_key(key_id: Annotated[int, Path(ge=1, le=2**31 - 1)], svc: Svc,
               key: Annotated[ApiKey, Depends(require("admin", "revoke key"))]) -> KeyInfo:
    """Revoke a key at once."""
    with audited(svc.db, key, "revoke key", str(key_id)):
        row = svc.db.revoke_key(key_id)
        if row is None:
            raise ApiError(404, f"no key {key_id}")
    return KeyInfo.model_validate(row, from_attributes=True)


@router.get("/audit", response_model=list[AuditOut], responses=ERRORS)
def audit_log(_: Annotated[ApiKey, Depends(require("admin"))], svc: Svc,
              limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[AuditOut]:
    """The latest writes, newest first: who, what, when and the outcome."""
    return [AuditOut.model_validate(e, from_attributes=True)
            for e in svc.db.audit_log(limit)]
