"""Dataset upload (multipart CSV/Parquet files in the dataset directory format)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from api.audit import audited
from api.auth import require
from api.datasets import check_files, dataset_path, problem_dict, store_upload
from api.db import ApiKey, DatasetRow
from api.errors import ApiError
from api.routes.common import error_responses
from api.routes.models import jsonable
from api.schemas import DatasetResponse
from api.state import Services, services

router = APIRouter(prefix="/v1", tags=["datasets"])
Svc = Annotated[Services, Depends(services)]


@router.post("/datasets", status_code=201, response_model=DatasetResponse,
             responses={200: {"model": DatasetResponse, "description": "already stored"},
                        **error_responses(401, 403, 413, 422)})
def upload_dataset(
    response: Response, svc: Svc,
    key: Annotated[ApiKey, Depends(require("analyst", "upload dataset"))],
    files: Annotated[list[UploadFile], File(description="the tables: strata.csv, "
                                            "areas.csv, population.csv, register*.csv, "
                                            "reference.csv, reference_map.csv, optional "
                                            "covariates, adjacency, dataset.yaml")],
    name: Annotated[str | None, Form(description="dataset name (default: the manifest's, "
                                     "else 'upload')")] = None,
) -> DatasetResponse:
    """Validate and store a dataset; 422 lists every problem with file, line, column and
    rule. Stored datasets are immutable and named by their content hash."""
    with audited(svc.db, key, "upload dataset", name or "") as outcome:
        names = [f.filename or "" for f in files]
        check_files(names, svc.settings.max_upload_files)
        dataset, problems, created = store_upload(
            svc.settings.datasets_dir, [(n, f.file) for n, f in zip(names, files,
                                                                     strict=True)], name)
        if dataset is None:
            errors = [p for p in problems if p.severity == "error"]
            raise ApiError(422, f"{len(errors)} problem(s) in the dataset; it was refused",
                           code="invalid_dataset",
                           details={"problems": [problem_dict(p) for p in problems]})
        summary = jsonable(dataset.summary())
        svc.db.add_dataset(DatasetRow(hash=dataset.hash, name=dataset.name,
                                      path=str(svc.settings.datasets_dir / dataset.hash),
                                      summary=summary, created_by=key.name))
        outcome.status = 201 if created else 200
        outcome.detail = dataset.hash
    response.status_code = outcome.status
    return DatasetResponse(hash=dataset.hash, name=dataset.name, created=created,
                           summary=summary,
                           problems=[problem_dict(p) for p in problems])


@router.get("/datasets/{digest}", response_model=DatasetResponse,
            responses=error_responses(401, 403, 404))
def get_dataset(digest: str, svc: Svc,
                _: Annotated[ApiKey, Depends(require("analyst"))]) -> DatasetResponse:
    """A stored dataset's summary."""
    dataset_path(svc.settings.datasets_dir, digest)
    row = svc.db.dataset(digest)
    if row is None:
        raise ApiError(404, f"no dataset '{digest}'")
    return DatasetResponse(hash=row.hash, name=row.name, created=False,
                           summary=row.summary, problems=[])
