"""Model specifications: `models/*.yaml` -> a typed, validated ModelSpec (priors as data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NormalPrior(_Spec):
    """Normal(mu, sigma); sigma 0 fixes the value at mu."""

    mu: float = 0.0
    sigma: float = Field(1.0, ge=0)


class GroupEffect(_Spec):
    """Effect of one stratum attribute: free (sum-to-zero) or a smooth random walk."""

    type: Literal["free", "rw1", "rw2"] = "free"
    sigma: float = Field(0.5, gt=0, description="scale of the HalfNormal prior on the spread "
                         "(pooled) or the spread itself (not pooled)")
    pooled: bool = Field(True, description="estimate the spread (partial pooling); with few "
                         "levels a fixed spread samples far better")
    centered: bool = Field(True, description="centred parametrisation (free effects): right "
                           "when every level has plenty of data")
    order: list[str] | None = Field(None, description="level order for random walks")


class AreaEffect(_Spec):
    """Area effect on detection: none, iid, nested (levels of the hierarchy) or BYM2."""

    type: Literal["none", "iid", "nested", "bym2"] = "iid"
    sigma: float = Field(0.5, gt=0, description="scale of the HalfNormal prior on sigma")
    levels: list[str] = Field(default_factory=list, description="for nested: coarser levels "
                              "added to the base area's own effect")
    centered: bool = False
    rho_prior: tuple[float, float] = Field((1.0, 1.0), description="Beta prior of the BYM2 "
                                           "mixing parameter")
    collapse: bool = Field(False, description="integrate the area effects out with a Laplace "
                           "approximation per area (iid or nested; each register count within "
                           "one area); right when every area has thousands of people")
    anchor: bool = Field(False, description="with collapse: sample the level effects, "
                         "detection covariates and scales relative to what the registers "
                         "alone say of them (an exact reparametrisation)")
    newton_steps: int = Field(6, ge=1, le=20, description="with collapse, where it stays a "
                              "graph (censored counts, completeness weights or the "
                              "beta-binomial): Newton steps to each area's mode, from the "
                              "registers' root weighed against the prior; each costs a "
                              "second derivative of the likelihood in every gradient, and "
                              "too few leave modes short where some area's root lies far "
                              "from its mode (bench/laplace.py). Exact binomial area totals "
                              "take the compiled collapse, which steps each area until it "
                              "converges")


class Prevalence(_Spec):
    """True prevalence: reference-stratum effects, covariates from evidence, sigma_eps."""

    intercept_sigma: float = Field(2.0, gt=0, description="prior sd of alpha_k around "
                                   "the reference evidence's logit")
    covariates: dict[str, NormalPrior] = Field(default_factory=dict)
    sigma_eps: float = Field(0.1, ge=0, description="sd of unexplained area variation in "
                             "true prevalence (a sensitivity choice, not estimated)")
    eps_nu: float | None = Field(None, gt=0, description="degrees of freedom of a Student-t "
                                 "for that variation (None: normal). Heavy tails let a few "
                                 "areas whose lists are unlike their population (nursing-home "
                                 "practices) sit far from the reference without moving the "
                                 "national rates")


class Detection(_Spec):
    intercept: NormalPrior = NormalPrior(mu=1.0, sigma=1.5)
    groups: dict[str, GroupEffect] = Field(default_factory=dict)
    covariates: dict[str, NormalPrior] = Field(default_factory=dict)
    area: AreaEffect = AreaEffect()
    treated: NormalPrior = Field(NormalPrior(mu=1.7, sigma=0.7),
                                 description="logit of the share of diagnosed cases that are "
                                 "treated, linking 'treated' evidence to detection")


class Likelihood(_Spec):
    family: Literal["binomial", "beta_binomial"] = "binomial"
    concentration: NormalPrior = Field(NormalPrior(mu=6.0, sigma=1.5),
                                       description="prior on log concentration (beta-binomial)")


class MissingAttribute(_Spec):
    """Recording completeness rho for 'not stated' observations, per area, pooled."""

    attribute: str = "ethnicity"
    mean: NormalPrior = NormalPrior(mu=2.0, sigma=1.0)
    sigma: float = Field(0.5, gt=0)


class WarmStartSettings(_Spec):
    """A refit's settings when it starts from the active version's posterior
    (`gapmodel.warmstart`): its mass matrix is known, so tuning only sets the step size,
    and the near-Gaussian geometry takes a longer step (target_accept: in place of the
    sampler's)."""

    tune: int = Field(300, ge=0)
    draws: int = Field(1000, ge=1)
    target_accept: float | None = Field(None, gt=0, lt=1)
    maxdepth: int | None = Field(
        None, ge=3, le=10, description="PyMC NUTS's maximum tree depth (none: its default, "
        "10): caps a draw at 2^maxdepth - 1 gradients")


class PilotSettings(_Spec):
    """Where no earlier version gives a warm start, what gives a first fit its mass matrix
    and starting points: a short run with the spec's own sampler (nuts), whose draws'
    covariance is the warm start's mass matrix; or Pathfinder's Gaussian approximation
    (pathfinder), which the warm run then adapts over its first `tune` steps."""

    method: Literal["nuts", "pathfinder"] = "nuts"
    tune: int = Field(300, ge=0, description="nuts: the pilot's warm-up; pathfinder: the "
                      "warm run's, in place of warm_start.tune, adapting the mass matrix")
    draws: int = Field(200, ge=100, description="nuts: the pilot's draws")
    maxdepth: int | None = Field(
        None, ge=3, le=10, description="nutpie's maximum tree depth in the pilot (none: "
        "the sampler's): caps the deep trees of its early warm-up")


class Sampler(_Spec):
    name: Literal["nutpie", "pymc", "numpyro"] = "nutpie"
    chains: int = Field(2, ge=1)
    tune: int = Field(1000, ge=0)
    draws: int = Field(1000, ge=1)
    target_accept: float = Field(0.9, gt=0, lt=1)
    seed: int = 1
    adaptation: Literal["diag", "low_rank"] = Field(
        "diag", description="nutpie mass-matrix adaptation")
    maxdepth: int | None = Field(
        None, ge=3, le=10, description="nutpie's maximum tree depth (none: its default, 10)")
    warm_start: WarmStartSettings | None = Field(
        None, description="refits start from the active version (PyMC's NUTS under its "
        "posterior's mass matrix) with these settings; none: always a cold start")
    pilot: PilotSettings | None = Field(
        None, description="without an earlier version to start from, a short run with this "
        "sampler gives the warm start instead (needs warm_start)")

    def with_lengths(self, draws: int, tune: int, chains: int | None = None) -> Sampler:
        """These lengths for a cold start (a quick look, a test run): no warm start and no
        pilot, whose own lengths would otherwise take over."""
        update = {"draws": draws, "tune": tune, "warm_start": None, "pilot": None}
        return self.model_copy(update=update | ({"chains": chains} if chains else {}))

    @model_validator(mode="after")
    def _check_pilot(self) -> Sampler:
        if self.pilot is not None and self.warm_start is None:
            raise ValueError("sampler.pilot needs sampler.warm_start (the run after it)")
        return self


class Gate(_Spec):
    rhat: float = 1.01
    ess: float = 400
    ebfmi: float = 0.3
    divergences: int = 0


class SimulatedData(_Spec):
    kind: Literal["simulate"] = "simulate"
    areas: int = 300
    seed: int = 0
    registers: Literal["cells", "totals"] = "cells"


class DirectoryData(_Spec):
    kind: Literal["directory"] = "directory"
    path: str


class EnglandData(_Spec):
    kind: Literal["england"] = "england"
    builder: str


DataSource = Annotated[SimulatedData | DirectoryData | EnglandData, Field(discriminator="kind")]


class ModelSpec(_Spec):
    """Everything that defines a fit except the data's content."""

    name: str
    condition: str = ""
    description: str = ""
    data: DataSource = SimulatedData()
    prevalence: Prevalence = Prevalence()
    detection: Detection = Detection()
    likelihood: Likelihood = Likelihood()
    missing: MissingAttribute | None = None
    sampler: Sampler = Sampler()
    gate: Gate = Gate()
    derived_draws: int = Field(1000, ge=10, description="thinned draws kept for serving")

    @model_validator(mode="after")
    def _check_area(self) -> ModelSpec:
        area = self.detection.area
        if area.type == "nested" and not area.levels:
            raise ValueError("detection.area: nested effects need 'levels'")
        if area.collapse and area.type not in ("iid", "nested"):
            raise ValueError("detection.area: collapse works for iid or nested effects")
        if area.anchor and not (area.collapse and len(area.levels) <= 1):
            raise ValueError("detection.area: anchor needs collapse and at most one level")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> ModelSpec:
        content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return cls.model_validate(content)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
