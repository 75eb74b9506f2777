"""Stand-ins for the England datasets: a builder's layout with made-up values.

A fit compiles its log density and gradient operation by operation (PyTensor's numba
backend), and most operations depend on the model's layout (its areas' hierarchy, strata,
registers and evidence), not on the data's values. A stand-in has the layout of a
builder's dataset with simulated populations, registers, covariates and evidence, and
needs none of the public files: `gapmodel compile SPEC --stand-in` compiles on it, so that
an image built with it gives a first fit of the real data most of its compiled code
(docs/performance.md, "England's first fit in a new image"). Its values mean nothing:
never fit one for estimates.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from gapmodel.data.dataset import Dataset
from gapmodel.data.england.builders import (
    DEMENTIA,
    HSE_DESIGN_EFFECT,
    HSE_N_PER_STRATUM,
    LAYOUTS,
    Condition,
    build,
)
from gapmodel.data.england.cells import COVARIATES, FINE, FINE_AGES, AreaCells, aggregate

#: made-up all-age register rates of the stand-ins' conditions
REGISTER_RATE = {"HYP": 0.14, "DEM": 0.007}
NOTE = "stand-in: simulated values in the layout of an England dataset, for compiling only"


def stand_in(builder: str, areas: int = 1250, seed: int = 0) -> Dataset:
    """A dataset in the layout of `builder`'s (PCN or sub-ICB areas in sub-ICBs, ICBs and
    regions; the condition's strata, register and evidence) with simulated values, about
    England's size by default: the model's form depends on some sizes (which fixed arrays
    the compiled function embeds, `gapmodel.model.runtime_constant`)."""
    if builder not in LAYOUTS:
        raise ValueError(f"no stand-in for England builder '{builder}' "
                         f"(have: {', '.join(LAYOUTS)})")
    level, condition = LAYOUTS[builder]
    rng = np.random.default_rng(seed)
    cells = _pcn_cells(condition.group, areas, rng)
    adjacency = None
    if level != "pcn":
        cells = aggregate(cells, level)
        adjacency = _ring(cells.areas.index.to_numpy())
    reference = _reference(condition, rng)
    condition = dataclasses.replace(
        condition, reference=lambda _: (reference, [NOTE]),
        description=f"Stand-in (simulated values) in the layout of: {condition.description}")
    return build(cells, condition, f"{builder}_stand_in", adjacency=adjacency)


def _pcn_cells(group: str, n: int, rng: np.random.Generator) -> AreaCells:
    """`n` PCN-like areas, twelve to a sub-ICB, five sub-ICBs to two ICBs, six ICBs to a
    region (England: 1,244 PCNs, 106 sub-ICBs, 42 ICBs, 7 regions), with all-age
    populations by fine age band and sex, a register and covariates."""
    index = pd.Index([f"P{i:05d}" for i in range(n)], name="area")
    parents = {"sub_icb": np.arange(n) // 12}
    parents["icb"] = parents["sub_icb"] * 2 // 5
    parents["region"] = parents["icb"] // 6
    areas = pd.DataFrame({"name": [f"stand-in area {i}" for i in range(n)]}, index=index)
    for level, codes in parents.items():
        areas[level] = [f"{level.upper()}{c:03d}" for c in codes]
        areas[f"{level}_name"] = [f"stand-in {level} {c}" for c in codes]
    areas["list_size"] = rng.integers(20_000, 80_000, n)
    # as England's unallocated and closing lists: a few areas with too few registered
    # cases to take part in the anchors (`gapmodel.model.MIN_ANCHOR_COUNT`)
    small = rng.choice(n, size=max(2, n // 50), replace=False)
    areas.iloc[small, areas.columns.get_loc("list_size")] = rng.integers(60, 200, len(small))
    ages = np.arange(len(FINE_AGES))
    profile = np.tile(np.exp(-0.08 * ages) + 0.2, 2)  # both sexes, fewer people by age
    shares = rng.gamma(50.0 * profile, size=(n, len(FINE)))
    shares /= shares.sum(axis=1, keepdims=True)
    population = pd.DataFrame(shares * areas["list_size"].to_numpy()[:, None],
                              index=index, columns=list(FINE))
    rate = REGISTER_RATE[group] * rng.lognormal(0.0, 0.2, n)
    register = pd.Series(np.rint(rate * areas["list_size"].to_numpy()), index=index)
    covariates = pd.DataFrame({"imd_score": rng.gamma(4.0, 5.5, n),
                               "pct_non_white": 100 * rng.beta(1.5, 6.0, n)}, index=index)
    return AreaCells(data_dir=Path("."), level="pcn", group=group, areas=areas,
                     population=population, register=register,
                     covariates=covariates[list(COVARIATES)], notes=(NOTE,))


def _reference(condition: Condition, rng: np.random.Generator) -> pd.DataFrame:
    """Evidence of the condition's kind, in its source's row order: survey counts of
    prevalence and of the treated share by sex and then age band (hypertension's HSE), or
    rates with a 95% interval by age band and then sex (dementia's CFAS II)."""
    bands = list(condition.bands)
    if condition is DEMENTIA:
        strata = [f"{band}|{sex}" for band in bands for sex in ("M", "F")]
        rate = np.linspace(0.01, 0.3, len(strata)) * rng.uniform(0.8, 1.2, len(strata))
        return pd.DataFrame({"ref_stratum": strata, "measure": "prevalence", "rate": rate,
                             "lower": rate * 0.6, "upper": rate * 1.6, "source": NOTE})
    n, deff = HSE_N_PER_STRATUM, HSE_DESIGN_EFFECT
    rows = []
    for sex in ("M", "F"):
        for k, band in enumerate(bands):
            cases = max(1, round(n * (0.03 + 0.12 * k) * rng.uniform(0.8, 1.2)))
            treated = round(cases * rng.uniform(0.5, 0.8))
            rows += [(f"{band}|{sex}", "prevalence", cases, n, deff, NOTE),
                     (f"{band}|{sex}", "treated", treated, cases, deff, NOTE)]
    return pd.DataFrame(rows, columns=["ref_stratum", "measure", "y", "n", "design_effect",
                                       "source"])


def _ring(codes: np.ndarray) -> pd.DataFrame:
    """Each area next to the following one, and the last to the first."""
    return pd.DataFrame({"area1": codes, "area2": np.roll(codes, -1)})
