"""Models and their versions (metadata only: no draws are loaded here)."""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends

from api.auth import require
from api.db import ApiKey
from api.routes.common import error_responses
from api.schemas import ModelInfo, VersionDetail, VersionSummary
from api.state import Services, services
from api.tables import clean

router = APIRouter(prefix="/v1", tags=["models"])
Viewer = Annotated[ApiKey, Depends(require("viewer"))]
Svc = Annotated[Services, Depends(services)]


def version_summary(meta: dict[str, Any]) -> dict[str, Any]:
    dataset = meta.get("dataset", {})
    return {"version": meta["version"], "model": meta["model"],
            "condition": meta.get("condition", ""), "created": meta["created"],
            "method": meta.get("method", "nuts"),
            "gate_passed": bool(meta.get("gate", {}).get("passed", False)),
            "active": bool(meta.get("active", False)),
            "dataset_hash": dataset.get("hash", ""), "dataset_name": dataset.get("name", ""),
            "derived_draws": meta.get("derived_draws")}


def jsonable(value: Any) -> Any:
    """Nested values with NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return clean(value)


@router.get("/models", response_model=list[ModelInfo], responses=error_responses(401))
def list_models(_: Viewer, svc: Svc) -> list[ModelInfo]:
    """Every model (condition) in the registry with its active version."""
    out = []
    for name in svc.store.models():
        metas = svc.store.registry.versions(name)
        active = next((m for m in metas if m["active"]), None)
        spec = (active or (metas[-1] if metas else {})).get("spec", {})
        out.append(ModelInfo(
            name=name, condition=spec.get("condition", ""),
            description=spec.get("description", ""), versions=len(metas),
            active_version=active["version"] if active else None,
            active_created=active["created"] if active else None,
            active_gate_passed=bool(active["gate"]["passed"]) if active else None,
            latest_version=metas[-1]["version"] if metas else None))
    return out


@router.get("/models/{model}/versions", response_model=list[VersionSummary],
            responses=error_responses(401, 404))
def list_versions(model: str, _: Viewer, svc: Svc) -> list[VersionSummary]:
    """A model's fitted versions, oldest first, with gate verdicts and the active flag."""
    svc.store.require_model(model)
    return [VersionSummary(**version_summary(m))
            for m in svc.store.registry.versions(model)]


@router.get("/versions/{version_id}", response_model=VersionDetail,
            responses=error_responses(401, 404))
def get_version(version_id: str, _: Viewer, svc: Svc) -> VersionDetail:
    """A version's spec, dataset (hash and summary), diagnostics, gate verdict, package
    versions and timings."""
    meta = svc.store.meta(version_id)
    path = svc.store.registry.find(version_id)
    diagnostics: list[dict[str, Any]] = []
    if (path / "diagnostics.csv").exists():
        frame = pd.read_csv(path / "diagnostics.csv", index_col=0)
        diagnostics = [{"parameter": str(name), **{k: clean(v) for k, v in row.items()}}
                       for name, row in frame.iterrows()]
    history = [e for e in svc.store.registry.history(meta["model"])
               if e.get("version") == version_id or e.get("previous") == version_id]
    return VersionDetail(**version_summary(meta), spec=meta.get("spec", {}),
                         dataset=jsonable(meta.get("dataset", {})),
                         gate=jsonable(meta.get("gate", {})),
                         diagnostics=diagnostics, packages=meta.get("packages", {}),
                         start=meta.get("start", {"kind": "cold"}),
                         timings=jsonable(meta.get("timings", {})),
                         files=meta.get("files", {}), history=jsonable(history))
