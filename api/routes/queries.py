"""Read routes over a version's joint draws: estimates, aggregates, plans, equity."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from api.auth import require
from api.db import ApiKey
from api.errors import ApiError
from api.routes.common import error_responses, policy_for, provenance, split
from api.schemas import (
    AggregateRequest,
    EquityResponse,
    EstimatesResponse,
    PlanResponse,
    TargetsRequest,
)
from api.state import Services, services
from api.tables import clean, control, label_columns, records, to_csv, to_parquet
from gapmodel.posterior import PosteriorView, equity, estimates, inequality, plan
from gapmodel.posterior.queries import exceed_label

router = APIRouter(prefix="/v1", tags=["queries"])
ESTIMATE_MEASURES = ("expected", "recorded", "undiagnosed", "diagnosis_rate",
                     "yield_per_contact", "number_needed_to_screen")
FILE_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet",
              "geojson": "application/geo+json"}
READ_ERRORS = error_responses(401, 403, 404, 409, 422)
Viewer = Annotated[ApiKey, Depends(require("viewer"))]
Outreach = Annotated[ApiKey, Depends(require("outreach"))]
Svc = Annotated[Services, Depends(services)]


def parent_areas(view: PosteriorView, parent: str) -> list[str]:
    """Base areas under a parent unit: ``LEVEL:CODE`` or a CODE of any parent level."""
    level, _, code = parent.rpartition(":")
    levels = [lv for lv in view.levels if lv != "area"]
    if level:
        level = view.aliases.get(level, level)
        if level not in levels:
            raise ApiError(422, f"'{level}' is not a parent level; levels: "
                           f"{', '.join(levels) or 'none'}", code="invalid_query")
        candidates = [level]
    else:
        candidates = levels
    for name in candidates:
        match = view.cells[name].astype(str) == code
        if match.any():
            return sorted(pd.unique(view.cells.loc[match, "area"].astype(str)))
    raise ApiError(422, f"no {' or '.join(candidates) or 'parent level'} '{code}'",
                   code="invalid_query")


def estimate_rows(table: pd.DataFrame, view: PosteriorView,
                  exceed: list[float]) -> list[dict[str, Any]]:
    groups = label_columns(table, view.columns())
    rows = records(table, ESTIMATE_MEASURES, groups,
                   plain=("cells", "population", "suppressed", "rounded", "rate_flagged"))
    labels = [exceed_label(k) for k in exceed]
    for row, i in zip(rows, range(len(table)), strict=True):
        row["exceed"] = {label: clean(table[label].iat[i]) for label in labels}
    return rows


def to_geojson(rows: list[dict[str, Any]], level: str, request: Request) -> dict[str, Any]:
    """Estimates as a GeoJSON FeatureCollection: one feature per row of a level with
    configured boundaries (GAPMODEL_BOUNDARIES), its estimates as properties."""
    bounds = getattr(request.app.state, "boundaries", {}).get(level)
    if bounds is None:
        configured = ", ".join(getattr(request.app.state, "boundaries", {})) or "none"
        raise ApiError(422, f"format=geojson needs boundaries for level '{level}' "
                       f"(configured: {configured})", code="invalid_query")
    shapes = {f["code"]: f for f in bounds["features"]}
    features = []
    for row in rows:
        shape = shapes.get(str(row["group"].get(level)))
        geometry = {"type": "MultiPolygon", "coordinates": shape["polygons"]} \
            if shape else None
        properties = {**row, "name": shape["name"] if shape else None}
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def sort_table(table: pd.DataFrame, sort: str | None) -> pd.DataFrame:
    if not sort:
        return table
    column = sort.lstrip("-")
    if column not in table.columns:
        raise ApiError(422, f"cannot sort by '{column}'; columns: "
                       f"{', '.join(map(str, table.columns))}", code="invalid_query")
    return table.sort_values(column, ascending=not sort.startswith("-"),
                             na_position="last", kind="stable").reset_index(drop=True)


@router.get("/models/{model}/estimates", response_model=EstimatesResponse,
            responses={**READ_ERRORS, 200: {"content": {t: {} for t in FILE_TYPES.values()},
                                            "description": "JSON, CSV, Parquet or "
                                            "GeoJSON (one level with boundaries)"}})
def get_estimates(
    model: str, key: Viewer, svc: Svc, response: Response, request: Request,
    level: Annotated[list[str] | None, Query(
        description="group by these levels or attributes (repeat or comma-separate); "
        "none: one total row")] = None,
    where: Annotated[str | None, Query(max_length=4000, description="cell filter, e.g. "
                                       "ethnicity == 'Black'")] = None,
    areas: Annotated[list[str] | None, Query(description="base area codes to keep")]
    = None,
    parent: Annotated[str | None, Query(description="keep the areas under LEVEL:CODE "
                                        "(or a CODE of any parent level)")] = None,
    prob: Annotated[float, Query(gt=0, lt=1)] = 0.9,
    exceed: Annotated[list[float] | None, Query(description="add P(undiagnosed > k)")]
    = None,
    sort: Annotated[str | None, Query(description="column to sort by; '-' for "
                                      "descending, e.g. -undiagnosed_mean")] = None,
    page: Annotated[int, Query(ge=1, le=10**6)] = 1,
    page_size: Annotated[int | None, Query(ge=1, le=100_000, description="default 100 "
                                           "for JSON, every row for files")] = None,
    format: Annotated[Literal["json", "csv", "parquet", "geojson"], Query()] = "json",
    version: Annotated[str | None, Query(description="default: the active version")]
    = None,
) -> Any:
    """Expected, recorded and undiagnosed people, diagnosis rate, yield per contact and
    number needed to screen per group, from per-draw sums (joint intervals)."""
    view = svc.store.view(model, version)
    selected = split(areas)
    if parent:
        under = parent_areas(view, parent)
        selected = under if selected is None else [a for a in selected if a in set(under)]
        if not selected:
            raise ApiError(422, f"no area is both under '{parent}' and in areas=",
                           code="invalid_query")
    ks = (exceed or [])[:10]
    table = estimates(view, by=split(level), where=where, areas=selected, prob=prob,
                      exceed=ks)
    attrs = dict(table.attrs)
    table = sort_table(control(table, policy_for(key, svc.settings)), sort)
    total = len(table)
    size = min(page_size or (100 if format == "json" else max(total, 1)),
               svc.settings.page_size_max if format == "json" else 10**6)
    window = table.iloc[(page - 1) * size: page * size].reset_index(drop=True)
    headers = {"X-Model-Version": view.version, "X-Total-Rows": str(total)}
    if format == "geojson":
        by = split(level) or []
        if len(by) != 1:
            raise ApiError(422, "format=geojson needs exactly one level", code="invalid_query")
        name = view.aliases.get(by[0], by[0])
        return JSONResponse(to_geojson(estimate_rows(window, view, ks), name, request),
                            media_type=FILE_TYPES["geojson"], headers=headers)
    if format != "json":
        body = to_csv(window) if format == "csv" else to_parquet(window)
        headers["Content-Disposition"] = (f'attachment; filename="{model}-{view.version}'
                                          f'-estimates.{format}"')
        return Response(body, media_type=FILE_TYPES[format], headers=headers)
    response.headers.update(headers)
    return EstimatesResponse.model_validate({
        **provenance(model, view, prob, key, svc.settings), "by": attrs["by"],
        "where": where, "areas": selected, "sort": sort, "page": page, "page_size": size,
        "total_rows": total, "rows": estimate_rows(window, view, ks)})


@router.post("/models/{model}/aggregate", response_model=EstimatesResponse,
             responses=READ_ERRORS)
def post_aggregate(model: str, body: AggregateRequest, key: Viewer, svc: Svc,
                   response: Response) -> EstimatesResponse:
    """Sum the joint draws over any set of areas and cells (one total, or per group of
    `by`), so the aggregate's interval is right."""
    view = svc.store.view(model, body.version)
    response.headers["X-Model-Version"] = view.version
    table = estimates(view, by=body.by or None, where=body.where, areas=body.areas,
                      prob=body.prob, exceed=body.exceed)
    attrs = dict(table.attrs)
    table = control(table, policy_for(key, svc.settings))
    return EstimatesResponse.model_validate({
        **provenance(model, view, body.prob, key, svc.settings), "by": attrs["by"],
        "where": body.where, "areas": body.areas, "page": 1, "page_size": len(table),
        "total_rows": len(table), "rows": estimate_rows(table, view, body.exceed)})


@router.post("/models/{model}/targets", response_model=PlanResponse,
             responses=READ_ERRORS)
def post_targets(model: str, body: TargetsRequest, key: Outreach, svc: Svc,
                 response: Response) -> PlanResponse:
    """Outreach plan: the units where the capacity finds the most undiagnosed people,
    with people found, yield and the probability each unit is in the optimal set."""
    view = svc.store.view(model, body.version)
    response.headers["X-Model-Version"] = view.version
    weights = body.equity.model_dump() if hasattr(body.equity, "model_dump") \
        else body.equity
    result = plan(view, body.capacity, capacity_unit=body.capacity_unit, unit=body.unit,
                  level=body.level, where=body.where, areas=body.areas,
                  sensitivity=body.sensitivity, equity=weights, prob=body.prob)
    policy = policy_for(key, svc.settings)
    units = control(result.units, policy)
    if body.limit is not None:
        units = units.iloc[:body.limit]
    found = result.total["found"]
    total = control(pd.DataFrame({f"found_{k}": [found.get(k)] for k in
                                  ("mean", "sd", "lower", "upper")}), policy)
    groups = label_columns(units, view.columns())
    rows = records(units, ("found", "yield"), groups,
                   plain=("rank", "population", "unregistered", "weight", "contacts",
                          "p_optimal", "suppressed", "rounded", "rate_flagged"))
    settings = {k: v for k, v in result.settings.items() if k != "version"}
    return PlanResponse.model_validate({
        **provenance(model, view, body.prob, key, svc.settings), "settings": settings,
        "total": {"units": result.total["units"], "contacts": result.total["contacts"],
                  "found": records(total, ("found",), ())[0]["found"]},
        "units": rows})


@router.get("/models/{model}/equity", response_model=EquityResponse,
            responses=READ_ERRORS)
def get_equity(
    model: str, key: Viewer, svc: Svc, response: Response,
    by: Annotated[str, Query(description="attribute or level, e.g. ethnicity")],
    reference: Annotated[str | None, Query(description="reference group (default: the "
                                           "largest)")] = None,
    where: Annotated[str | None, Query(max_length=4000)] = None,
    areas: Annotated[list[str] | None, Query()] = None,
    order: Annotated[list[str] | None, Query(description="rank order of the groups for "
                                             "SII/RII (default natural order)")] = None,
    with_inequality: Annotated[bool, Query(alias="inequality", description="add the slope "
                                           "and relative index of inequality")] = True,
    prob: Annotated[float, Query(gt=0, lt=1)] = 0.9,
    version: Annotated[str | None, Query()] = None,
) -> EquityResponse:
    """Diagnosis rate per group, ratio and difference against a reference group, and
    the slope (SII) and relative (RII) index of inequality along the groups' order."""
    view = svc.store.view(model, version)
    response.headers["X-Model-Version"] = view.version
    selected = split(areas)
    table = equity(view, by=by, reference=reference, where=where, areas=selected,
                   prob=prob)
    attrs = dict(table.attrs)
    index = None
    if with_inequality:
        found = inequality(view, by, order=split(order), where=where, areas=selected,
                           prob=prob)
        index = {"attribute": found.attrs["attribute"], "order": found.attrs["order"],
                 "weights": found.attrs["weights"],
                 "rows": [{"measure": m, **{k: clean(v) for k, v in row.items()}}
                          for m, row in found.iterrows()]}
    table = control(table, policy_for(key, svc.settings))
    rows = records(table, ("expected", "undiagnosed", "diagnosis_rate", "ratio",
                           "difference"), [attrs["by"]],
                   plain=("reference", "cells", "population", "p_ratio_below_1",
                          "suppressed", "rounded", "rate_flagged"))
    return EquityResponse.model_validate({
        **provenance(model, view, prob, key, svc.settings), "by": attrs["by"],
        "reference": attrs["reference"], "rows": rows, "inequality": index})
