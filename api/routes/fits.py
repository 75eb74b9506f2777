"""Fit jobs: start (202), follow, cancel. The fit runs in a worker process."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import ValidationError

from api.audit import audited
from api.auth import require
from api.datasets import dataset_path
from api.db import ApiKey, FitJob
from api.errors import ApiError
from api.routes.common import error_responses
from api.schemas import FitJobOut, FitRequest
from api.state import Services, services
from api.store import check_name
from gapmodel.spec import DirectoryData, ModelSpec

router = APIRouter(prefix="/v1", tags=["fits"])
Svc = Annotated[Services, Depends(services)]
Analyst = Annotated[ApiKey, Depends(require("analyst"))]


def job_out(row: FitJob) -> FitJobOut:
    return FitJobOut.model_validate(row, from_attributes=True)


def resolve_spec(svc: Services, body: FitRequest) -> ModelSpec:
    """A named spec (<specs_dir>/<name>.yaml) or an inline one; 422 on any error."""
    try:
        if isinstance(body.spec, str):
            name = body.spec.removesuffix(".yaml")
            check_name(name, "spec")
            path = svc.settings.specs_dir / f"{name}.yaml"
            if not path.is_file():
                raise ApiError(404, f"no spec '{name}' in {svc.settings.specs_dir}")
            spec = ModelSpec.from_yaml(path)
        else:
            spec = ModelSpec.model_validate(body.spec)
            if isinstance(spec.data, DirectoryData) and body.dataset is None:
                raise ApiError(422, "an inline spec reads directory data only from an "
                               "uploaded dataset: give its hash as 'dataset'",
                               code="invalid_spec")
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                   for e in exc.errors()]
        raise ApiError(422, "not a valid model spec", code="invalid_spec",
                       details=details) from None
    except (OSError, ValueError) as exc:
        raise ApiError(422, f"not a valid model spec: {exc}", code="invalid_spec") from None
    check_name(spec.name, "model name")
    if body.draws is not None:
        spec = spec.model_copy(update={"sampler": spec.sampler.with_lengths(body.draws,
                                                                           body.draws)})
    return spec


@router.post("/fits", status_code=202, response_model=FitJobOut,
             responses=error_responses(401, 403, 404, 422))
def start_fit(body: FitRequest, response: Response, svc: Svc,
              key: Annotated[ApiKey, Depends(require("analyst", "start fit"))]
              ) -> FitJobOut:
    """Queue a fit of a spec on an uploaded dataset (or the spec's own data). It saves a
    version; with promote, the version becomes active only if it passes the gate."""
    target = body.spec if isinstance(body.spec, str) else str(body.spec.get("name", ""))
    with audited(svc.db, key, "start fit", target) as outcome:
        spec = resolve_spec(svc, body)
        dataset_dir = None
        if body.dataset is not None:
            path = dataset_path(svc.settings.datasets_dir, body.dataset)
            if not path.is_dir():
                raise ApiError(404, f"no dataset '{body.dataset}'; upload it first")
            dataset_dir = str(path.resolve())
        row = svc.db.create_job(model=spec.name, spec=spec.model_dump(mode="json"),
                                dataset_hash=body.dataset, promote=body.promote,
                                created_by=key.name, owner=svc.jobs.owner)
        svc.jobs.submit(row, dataset_dir)
        outcome.status = 202
        outcome.detail = f"job {row.id}"
    response.headers["Location"] = f"/v1/fits/{row.id}"
    return job_out(svc.db.job(row.id) or row)


@router.get("/fits", response_model=list[FitJobOut], responses=error_responses(401, 403))
def list_fits(_: Analyst, svc: Svc,
              limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[FitJobOut]:
    """Recent fit jobs, newest first."""
    return [job_out(r) for r in svc.db.jobs(limit=limit)]


@router.get("/fits/{job_id}", response_model=FitJobOut,
            responses=error_responses(401, 403, 404))
def get_fit(job_id: str, _: Analyst, svc: Svc) -> FitJobOut:
    """A job's status, phase and progress; when done its version and gate verdict."""
    row = svc.db.job(job_id[:64])
    if row is None:
        raise ApiError(404, f"no fit job '{job_id[:64]}'")
    return job_out(row)


@router.delete("/fits/{job_id}", response_model=FitJobOut,
               responses=error_responses(401, 403, 404, 409))
def cancel_fit(job_id: str, svc: Svc,
               key: Annotated[ApiKey, Depends(require("analyst", "cancel fit"))]
               ) -> FitJobOut:
    """Cancel a queued or running fit; the active version is never changed by it."""
    with audited(svc.db, key, "cancel fit", job_id[:64]):
        row = svc.jobs.cancel(job_id[:64])
    return job_out(row)
