"""Request and response models: the OpenAPI document is the service's contract."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float
Where = str | dict[str, Scalar | list[Scalar]] | None
WHERE_HELP = ("cell filter: an expression such as \"ethnicity == 'Black' and age_band in "
              "['60-79', '80+']\", or a mapping of column -> value(s)")


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class ErrorDetail(_Out):
    code: str = Field(description="machine-readable reason, e.g. unauthorized, invalid_query")
    message: str
    details: Any = None


class ErrorResponse(_Out):
    error: ErrorDetail


class Health(_Out):
    status: str


class Ready(_Out):
    status: str
    models: list[str] = Field(description="models whose active version is loaded")


# -- models and versions ------------------------------------------------------------------

class ModelInfo(_Out):
    name: str
    condition: str
    description: str
    versions: int
    active_version: str | None
    active_created: str | None
    active_gate_passed: bool | None
    latest_version: str | None


class VersionSummary(_Out):
    version: str
    model: str
    condition: str
    created: str
    method: str
    gate_passed: bool
    active: bool
    dataset_hash: str
    dataset_name: str
    derived_draws: int | None


class VersionDetail(VersionSummary):
    spec: dict[str, Any]
    dataset: dict[str, Any]
    gate: dict[str, Any]
    diagnostics: list[dict[str, Any]] = Field(description="ArviZ summary per monitored "
                                              "parameter (mean, sd, q5, q50, q95, r_hat, "
                                              "ess_bulk, ess_tail)")
    packages: dict[str, str]
    start: dict[str, str] = Field(description="how the sampler started: kind 'cold', "
                                  "'warm' (from: the version whose posterior gave the mass "
                                  "matrix) or 'pilot' (method: 'pathfinder' where Pathfinder's "
                                  "approximation gave it, else a short run); reason where "
                                  "a warm start was not possible")
    timings: dict[str, float | None]
    files: dict[str, str] = Field(description="SHA-256 per artefact file")
    history: list[dict[str, Any]]


# -- query results ------------------------------------------------------------------------

class Summary(_Out):
    """Posterior mean, sd and equal-tailed interval; null where withheld or undefined."""

    mean: float | None = None
    sd: float | None = None
    lower: float | None = None
    upper: float | None = None


class Disclosure(_Out):
    applied: bool = Field(description="small counts withheld and the rest rounded")
    suppress_from: int
    suppress_to: int
    round_to: int
    exempt_role: str


class Provenance(_Out):
    model: str
    version: str
    dataset_hash: str
    prob: float
    draws: int
    disclosure: Disclosure


class EstimateRow(_Out):
    group: dict[str, str] = Field(description="the row's value of each grouping column")
    cells: int
    population: float
    expected: Summary = Field(description="true cases (recorded + undiagnosed)")
    recorded: Summary
    undiagnosed: Summary
    diagnosis_rate: Summary
    yield_per_contact: Summary = Field(description="undiagnosed per person not on the "
                                       "register")
    number_needed_to_screen: Summary
    exceed: dict[str, float] = Field(default_factory=dict,
                                     description="P(undiagnosed > k) per requested k")
    suppressed: bool
    rounded: bool
    rate_flagged: bool


class EstimatesResponse(Provenance):
    by: list[str]
    where: Any = None
    areas: list[str] | None = None
    sort: str | None = None
    page: int
    page_size: int
    total_rows: int
    rows: list[EstimateRow]


class AggregateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    areas: list[str] | None = Field(None, max_length=100_000,
                                    description="base area codes to sum over")
    where: Where = Field(None, description=WHERE_HELP)
    by: list[str] = Field(default_factory=list, max_length=4,
                          description="group columns (none: one total)")
    prob: float = Field(0.9, gt=0, lt=1)
    exceed: list[float] = Field(default_factory=list, max_length=10)
    version: str | None = Field(None, description="default: the active version")


class EquityWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attribute: str
    weights: dict[str, float] = Field(min_length=1)


class TargetsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capacity: int = Field(ge=1, le=10**9, description="contacts (people) or units")
    capacity_unit: Literal["contacts", "areas"] = "contacts"
    unit: Literal["area", "area_stratum"] = "area"
    level: str | None = Field(None, description="area level of the units (default base)")
    where: Where = Field(None, description=WHERE_HELP)
    areas: list[str] | None = Field(None, max_length=100_000)
    sensitivity: float = Field(1.0, gt=0, le=1)
    equity: Literal["least_diagnosed"] | EquityWeights | None = Field(
        None, description="'least_diagnosed' or weights of an attribute's values")
    prob: float = Field(0.9, gt=0, lt=1)
    version: str | None = None
    limit: int | None = Field(None, ge=1, description="return at most this many units")


class PlanUnit(_Out):
    rank: int
    group: dict[str, str]
    population: float
    unregistered: float | None
    weight: float | None = None
    contacts: float | None
    found: Summary
    yield_: Summary = Field(alias="yield")
    p_optimal: float
    suppressed: bool
    rounded: bool
    rate_flagged: bool


class PlanTotal(_Out):
    units: int
    contacts: int
    found: Summary


class PlanResponse(Provenance):
    settings: dict[str, Any]
    total: PlanTotal
    units: list[PlanUnit]


class EquityRow(_Out):
    group: dict[str, str]
    reference: bool
    cells: int
    population: float
    expected: Summary
    undiagnosed: Summary
    diagnosis_rate: Summary
    ratio: Summary
    difference: Summary
    p_ratio_below_1: float | None
    suppressed: bool
    rounded: bool
    rate_flagged: bool


class InequalityRow(_Out):
    measure: Literal["sii", "rii"]
    mean: float | None
    sd: float | None
    lower: float | None
    upper: float | None
    p_increasing: float | None


class Inequality(_Out):
    attribute: str
    order: list[str]
    weights: str
    rows: list[InequalityRow]


class EquityResponse(Provenance):
    by: str
    reference: str
    rows: list[EquityRow]
    inequality: Inequality | None


# -- writes -------------------------------------------------------------------------------

class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    force: bool = Field(False, description="promote a version that failed the gate")
    reason: str = Field("", max_length=2000, description="required with force; recorded")


class ActiveResponse(_Out):
    model: str
    active: str
    previous: str | None


class ProblemOut(_Out):
    severity: str
    file: str
    line: int | None = Field(description="line in the file; the header is line 1")
    row: int | None = Field(description="data row (line - 1)")
    column: str | None
    rule: str
    message: str


class DatasetResponse(_Out):
    hash: str
    name: str
    created: bool = Field(description="false when the same content was stored before")
    summary: dict[str, Any]
    problems: list[ProblemOut] = Field(description="warnings and notes")


class FitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: str | dict[str, Any] = Field(description="name of a models/*.yaml spec, or an "
                                       "inline spec")
    dataset: str | None = Field(None, description="hash of an uploaded dataset (default: "
                                "the spec's own data)")
    draws: int | None = Field(None, ge=10, le=100_000,
                              description="override tune and draws per chain")
    promote: bool = Field(False, description="make the version active if it passes the "
                          "gate")


class FitJobOut(_Out):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    dataset_hash: str | None
    promote: bool
    phase: str
    progress: float
    created: dt.datetime
    created_by: str
    started: dt.datetime | None
    finished: dt.datetime | None
    version: str | None
    promoted: bool
    gate: dict[str, Any] | None
    diagnostics: list[dict[str, Any]] | None = Field(
        description="ArviZ summary per monitored parameter, once the fit is done")
    error: str | None


# -- keys and audit -----------------------------------------------------------------------

class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["viewer", "outreach", "analyst", "admin"]
    name: str = Field("", max_length=200)


class KeyInfo(_Out):
    id: int
    name: str
    role: str
    prefix: str
    created: dt.datetime
    revoked: dt.datetime | None


class KeyCreated(KeyInfo):
    key: str = Field(description="the key itself: shown once, stored only as a hash")


class AuditOut(_Out):
    id: int
    at: dt.datetime
    key_id: int | None
    key_name: str
    role: str
    action: str
    target: str
    outcome: str
    status: int
    detail: str
