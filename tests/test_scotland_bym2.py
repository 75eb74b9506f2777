"""Scottish lip cancer BYM2 benchmark: the product's BYM2 effect against published fits.

Reference: the Stan fit in stan-dev/example-models knitr/car-iar-poisson/stan_INLA_bym2.html
(commit 51f7f319), see models/benchmarks/scotland_lip_bym2.yaml and docs/model.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from gapmodel.benchmarks import (
    SCOTLAND_ADJACENCY,
    SCOTLAND_OBSERVATIONS,
    BenchmarkSpec,
    compare_published,
    fit_benchmark,
    load_scotland,
    load_spec,
    resolve_data_dir,
    scotland_bym2_model,
)

SPEC = Path(__file__).resolve().parents[1] / "models" / "benchmarks" / "scotland_lip_bym2.yaml"
DATA = resolve_data_dir()
HAVE_DATA = all((DATA / f).is_file()
                for f in (SCOTLAND_OBSERVATIONS, *SCOTLAND_ADJACENCY.values()))
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"Scotland lip cancer files not found in {DATA}: set "
                          "GAPMODEL_DATA_DIR or provide ../shared/data beside the repository")

# Tolerance on |our posterior mean - published mean| (gapmodel.benchmarks.compare_published):
#   0.25 x published posterior sd  +  3 x our MCSE of the mean  +  0.005 (2-decimal rounding).
# * The published table (Stan, 4 x 5000 draws) reports no Monte Carlo errors; with an ESS of
#   a few thousand its MCSE is about sd/sqrt(ESS) < 0.03 sd, so a quarter of a posterior sd
#   is several times the reference's own noise while still a small shift for inference. It
#   also covers the Stan-vs-INLA spread in the same table (<= 0.06 sd; logit_rho 0.22 sd).
# * 3 x our MCSE keeps the false-alarm rate from our own sampling noise near 0.3% a quantity.
# * It has the power to catch the mistakes that matter (non-centred runs, see docs/model.md):
#   rho ~ Beta(1, 1) instead of Beta(0.5, 0.5) moves logit_rho by -0.54 sd, the islands
#   graph moves beta0 by -0.48 sd, and x = AFF instead of AFF/10 moves beta1 by -2.6 sd.
# sigma and rho are compared on the scales the source tabulates: log_precision = -2 log(sigma)
# and logit(rho); mu_5 is the fitted mean count of district 5.
SD_FRACTION = 0.25
MCSE_MULTIPLE = 3.0
MAX_RHAT = 1.01
MAX_SECONDS = 60.0



# -- fast checks (no sampling) --------------------------------------------------------------

def test_spec_validates_and_cites_its_source() -> None:
    spec = load_spec(SPEC)
    assert spec.data.adjacency == "connected" and spec.data.covariate_scale == 0.1
    assert (spec.priors.rho.alpha, spec.priors.rho.beta) == (0.5, 0.5)
    assert spec.reference.name == "stan"
    assert spec.reference.source.repo == "stan-dev/example-models"
    assert set(spec.reference.values) >= {"beta0", "beta1", "log_precision", "logit_rho"}


def test_spec_rejects_unknown_quantities_and_fields() -> None:
    raw = load_spec(SPEC).model_dump()
    raw["published"][0]["values"]["tau"] = {"mean": 1.0, "sd": 1.0}
    with pytest.raises(ValidationError, match="unknown quantities"):
        BenchmarkSpec.model_validate(raw)
    raw = load_spec(SPEC).model_dump()
    raw["sampler"]["adapt_delta"] = 0.9
    with pytest.raises(ValidationError):
        BenchmarkSpec.model_validate(raw)


@needs_data
@pytest.mark.parametrize(("islands", "edges", "sizes", "scale"), [
    (False, 132, [56], 0.4853175),  # stan_INLA_bym2.html: scaling_factor = 0.4853175
    (True, 126, [1, 1, 1, 53], 0.4504),  # BYM2 islands.ipynb (0aa03e22): [0.4504, 1, 1, 1]
])
def test_load_scotland_graphs_match_published_scaling(islands: bool, edges: int,
                                                      sizes: list[int], scale: float) -> None:
    data = load_scotland(DATA, islands=islands)
    assert len(data.names) == 56 and data.observed.sum() == 536
    assert math.isclose(data.expected.sum(), 536.2, abs_tol=0.05)
    assert len(data.graph.edges) == edges
    assert sorted(data.graph.sizes.tolist()) == sizes
    factors = data.graph.scaling_factors()
    main = factors[~data.graph.isolated]
    assert np.allclose(main, main[0])
    # published to 7 (connected; INLA adds a tiny diagonal jitter) and 4 significant digits
    assert math.isclose(main[0], scale, rel_tol=1e-6 if not islands else 1e-4)
    if islands:
        assert data.graph.isolated[[5, 7, 10]].all()  # Shetland, Orkney, Western Isles


@needs_data
def test_model_has_area_coords_and_published_rho_prior() -> None:
    spec = load_spec(SPEC)
    data = load_scotland(DATA)
    model = scotland_bym2_model(data, spec.priors, centered=False)
    assert list(model.coords["area"]) == data.names
    # density of rho on its log-odds scale = Beta(rho | .5, .5) x Jacobian rho (1 - rho)
    value = model.rvs_to_values[model["rho_bym2"]]
    logp = model.compile_fn(model.logp(vars=[model["rho_bym2"]], jacobian=True),
                            inputs=[value], point_fn=False)
    for rho in (0.05, 0.5, 0.97):
        expected = (-0.5 * math.log(rho) - 0.5 * math.log(1 - rho) - math.log(math.pi)
                    + math.log(rho * (1 - rho)))
        assert math.isclose(float(logp(math.log(rho / (1 - rho)))), expected, rel_tol=1e-6)


# -- the benchmark (real sampling) ----------------------------------------------------------

def _report(summary: pd.DataFrame, table: pd.DataFrame) -> str:
    cols = ["published_mean", "mean", "diff", "diff_in_sd", "tolerance", "ok"]
    return (f"\n{summary.attrs}\n{summary[['mean', 'sd', 'mcse_mean', 'ess_bulk', 'r_hat']]}"
            f"\n{table[cols]}")


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize(("centered", "eigen_limit"), [
    pytest.param(True, 1500, id="centered"),
    pytest.param(True, 0, id="centered_sparse"),  # the form of components above 1,500
    pytest.param(False, 1500, id="non_centered"),
])
def test_scotland_bym2_reproduces_published_stan_fit(centered: bool, eigen_limit: int
                                                     ) -> None:
    spec = load_spec(SPEC)
    summary = fit_benchmark(SPEC, DATA, centered=centered, eigen_limit=eigen_limit)
    table = compare_published(summary, spec.reference, sd_fraction=SD_FRACTION,
                              mcse_multiple=MCSE_MULTIPLE)
    report = _report(summary, table)
    print(report)
    problems = []
    if summary.attrs["divergences"]:
        problems.append(f"{summary.attrs['divergences']} divergences")
    if summary["r_hat"].max() > MAX_RHAT or summary.attrs["max_rhat_all"] > MAX_RHAT:
        problems.append(f"R-hat {summary.attrs['max_rhat_all']:.4f} > {MAX_RHAT}")
    if not table["ok"].all():
        problems.append(f"means off: {', '.join(table.index[~table['ok']])}")
    if summary.attrs["wall_seconds"] > MAX_SECONDS:
        problems.append(f"took {summary.attrs['wall_seconds']:.0f} s")
    assert not problems, "; ".join(problems) + report
