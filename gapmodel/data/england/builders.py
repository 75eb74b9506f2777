"""England datasets: conditions (strata, register rule, reference) on shared cells."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gapmodel.data.build import build_dataset
from gapmodel.data.dataset import Dataset
from gapmodel.data.england import sources as src
from gapmodel.data.england.cells import (
    SEXES,
    AreaCells,
    aggregate,
    fmt,
    largest_remainder,
    pcn_cells,
)

#: Assumed HSE 2022 respondents with a valid blood-pressure reading per age band x sex:
#: 3,885 adults had a health visit in HSE 2022; about 3,600 of them with a valid reading
#: and medication data, spread over 12 age-sex groups, is about 300 each.
HSE_N_PER_STRATUM = 300
#: Design effect of HSE estimates (clustered, weighted sample): n is deflated by it.
HSE_DESIGN_EFFECT = 1.5
#: Share of the QOF dementia register aged under 65 (early onset): bounds (low, high).
DEM_UNDER65_SHARE = (0.02, 0.05)
#: Areas recording more than this multiple of the national recorded prevalence are named.
OUTLIER_FACTOR = 2.5

HYP_BANDS = {
    "16-34": ("16-19", "20-24", "25-29", "30-34"),
    "35-44": ("35-39", "40-44"),
    "45-54": ("45-49", "50-54"),
    "55-64": ("55-59", "60-64"),
    "65-74": ("65-69", "70-74"),
    "75+": ("75-79", "80-84", "85-89", "90+"),
}
DEM_BANDS = {b: (b,) for b in ("65-69", "70-74", "75-79", "80-84", "85-89", "90+")}


@dataclass(frozen=True)
class Condition:
    """What turns shared cells into one condition's dataset."""

    condition: str
    group: str
    bands: dict[str, tuple[str, ...]]
    description: str
    reference: Callable[[Path], tuple[pd.DataFrame, list[str]]]
    register: Callable[[pd.Series], tuple[pd.DataFrame, list[str]]]
    files: tuple[str, ...]

    def strata(self) -> pd.DataFrame:
        rows = [(f"{band}|{sex}", band, sex) for band in self.bands for sex in SEXES]
        return pd.DataFrame(rows, columns=["stratum", "age_band", "sex"])

    def bins(self) -> dict[str, list[str]]:
        """Stratum -> the FINE bins it sums."""
        return {f"{band}|{sex}": [f"{sex}|{a}" for a in ages]
                for band, ages in self.bands.items() for sex in SEXES}


def _hse_reference(data_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    hse = src.read(data_dir, src.HSE_HYPERTENSION)
    sexes = {"Men": "M", "Women": "F"}
    bands = list(HYP_BANDS)
    missing = [b for b in bands if b not in hse.columns]
    if missing:
        raise ValueError(f"{src.HSE_HYPERTENSION} lacks age band column(s) {missing}")

    def pct(sex: str, group: str, band: str) -> float:
        row = hse[(hse["Sex"] == sex) & (hse["Group"] == group)]
        if len(row) != 1:
            raise ValueError(f"{src.HSE_HYPERTENSION}: expected one row {sex} / {group}")
        text = str(row[band].iloc[0]).strip()
        return 0.0 if text in ("-", "") else float(text)

    n, deff = HSE_N_PER_STRATUM, HSE_DESIGN_EFFECT
    cite = ("HSE 2022 Part 2, Adults' health: hypertension (NHS England 2024); percentages; "
            f"n = {n} per age-sex group assumed, design effect {deff}")
    rows = []
    for sex_name, sex in sexes.items():
        for band in bands:
            stratum = f"{band}|{sex}"
            all_pct = pct(sex_name, "All with hypertension", band)
            treated_pct = (pct(sex_name, "Hypertensive controlled", band)
                           + pct(sex_name, "Hypertensive uncontrolled", band))
            cases = max(1, round(n * all_pct / 100))
            rows.append((stratum, "prevalence", round(n * all_pct / 100), n, deff, cite))
            rows.append((stratum, "treated", min(cases, round(n * treated_pct / 100)), cases,
                         deff, cite + "; treated = controlled + uncontrolled among all with "
                         "hypertension, out of the assumed number of cases"))
    ref = pd.DataFrame(rows, columns=["ref_stratum", "measure", "y", "n", "design_effect",
                                      "source"])
    notes = [
        f"Reference (HSE 2022): 'All with hypertension' % by sex x age band as survey counts "
        f"y/n with an assumed n = {n} adults per age-sex group (HSE 2022: 3,885 adults had a "
        f"health visit; ~3,600 with a valid blood pressure over 12 groups) and design effect "
        f"{deff} (effective n {n / deff:.0f}). Percentages are published rounded to whole "
        "numbers; '-' read as 0.",
        "Reference measure 'treated' (a lower bound on the diagnosed share): (controlled + "
        "uncontrolled) / all with hypertension, as y of the assumed number of cases "
        f"(round(n x prevalence)), design effect {deff}. HSE covers private households only.",
    ]
    return ref, notes


def _cfas_reference(data_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    cfas = src.read(data_dir, src.CFAS_DEMENTIA)
    sex = cfas["sex"].str.strip().map({"Male": "M", "Female": "F"})
    if sex.isna().any() or not cfas["age_band"].isin(list(DEM_BANDS)).all():
        raise ValueError(f"{src.CFAS_DEMENTIA}: unexpected sex or age band values")
    ref = pd.DataFrame({
        "ref_stratum": cfas["age_band"].str.strip() + "|" + sex,
        "measure": "prevalence",
        "rate": src.number(cfas["dementia_prevalence"]),
        "lower": src.number(cfas["dementia_prevalence_95_lower"]),
        "upper": src.number(cfas["dementia_prevalence_95_upper"]),
        "source": "CFAS II (Matthews et al., Lancet 2013): dementia prevalence with 95% CI",
    })
    return ref, ["Reference (CFAS II): published dementia prevalence by 5-year age band x "
                 "sex with its 95% interval (logit-normal likelihood); CFAS II includes care-"
                 "home residents."]


def _exact_register(raw: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    counts = np.rint(raw.to_numpy()).astype(np.int64)
    return pd.DataFrame({"area": raw.index, "count": counts}), []


def _hyp_register(raw: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    table, _ = _exact_register(raw)
    return table, ["Register: the QOF HYP register counts all ages while the cells are 16+ "
                   "(HSE's population); under-16 hypertension is negligible, so each area's "
                   "count is used as exact for its 16+ cells."]


def _dem_register(raw: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    low, high = DEM_UNDER65_SHARE
    share = (low + high) / 2
    r = np.rint(raw.to_numpy())
    counts = np.rint(r * (1 - share)).astype(np.int64)
    table = pd.DataFrame({"area": raw.index, "count": counts})
    return table, [
        f"Register: the QOF DEM register counts all ages ({fmt(r.sum())}) while the cells "
        f"are 65+; NHS Digital's Recorded Dementia Diagnoses put about 3% of the register "
        f"under 65 (between {low:.0%} and {high:.0%}), so each area's 65+ count is R x "
        f"{1 - share:.3f} rounded ({fmt(counts.sum())} in all). An area's own under-65 share "
        "is absorbed by its detection effect; the national share's range moves the 65+ "
        f"total by {fmt(r.sum() * (high - low) / 2)} either way, which the estimates do not "
        "carry."]


HYPERTENSION = Condition(
    condition="hypertension", group="HYP", bands=HYP_BANDS,
    description="Hypertension 2022-23: QOF HYP register totals against HSE 2022 prevalence, "
                "cells 16+ by HSE age band x sex.",
    reference=_hse_reference, register=_hyp_register,
    files=(src.HSE_HYPERTENSION,))
DEMENTIA = Condition(
    condition="dementia", group="DEM", bands=DEM_BANDS,
    description="Dementia 2022-23: QOF DEM register (its 65+ part at an assumed under-65 "
                "share) against CFAS II prevalence, cells 65+ by 5-year age band x sex.",
    reference=_cfas_reference, register=_dem_register,
    files=(src.CFAS_DEMENTIA,))


def _population(cells: AreaCells, condition: Condition) -> tuple[pd.DataFrame, list[str]]:
    bins = condition.bins()
    fine = cells.population
    inside = np.column_stack([fine[m].sum(axis=1).to_numpy() for m in bins.values()])
    totals = cells.areas["list_size"].to_numpy()
    inside_total = np.minimum(np.rint(inside.sum(axis=1)), totals)
    counts = largest_remainder(inside, inside_total)
    outside = totals - counts.sum(axis=1)
    strata = list(bins)
    table = pd.DataFrame({
        "area": np.repeat(fine.index.to_numpy(), len(strata)),
        "stratum": np.tile(strata, len(fine)),
        "population": counts.reshape(-1)})
    total, in_cells = int(counts.sum() + outside.sum()), int(counts.sum())
    low = min(int(a.split("-")[0].rstrip("+")) for a in condition.bands)
    return table, [
        f"Population: 2022-23 list size (all ages, {fmt(total)}) shared over the "
        f"{len(strata)} strata and the ages outside them by the area's calibrated age-sex "
        "composition; the area's in-strata total is rounded to an integer and shared over "
        f"the strata by largest remainder; cells ({low}+) hold {fmt(in_cells)} "
        f"({in_cells / total:.1%}). Composition dated Aug 2026, list sizes 2022-23."]


def _outliers(population: pd.DataFrame, register: pd.DataFrame, level: str) -> list[str]:
    """Name the areas whose recorded prevalence is far above the national one."""
    recorded = register.set_index("area")["count" if "count" in register else "hi"]
    pop = population.groupby("area")["population"].sum().reindex(recorded.index)
    national = recorded.sum() / pop.sum()
    ratio = (recorded / pop.where(pop > 0)).dropna()
    high = ratio[ratio > OUTLIER_FACTOR * national].sort_values(ascending=False)
    if high.empty:
        return [f"No {level} area records more than {OUTLIER_FACTOR:g} x the national "
                f"recorded prevalence ({national:.1%}) in its cells."]
    listed = ", ".join(f"{a} {r:.1%}" for a, r in high[:10].items())
    return [f"{len(high)} {level} area(s) record more than {OUTLIER_FACTOR:g} x the national "
            f"recorded prevalence ({national:.1%}) in their cells: {listed}. Likely practices "
            "with an unusual list (e.g. nursing-home practices) whose age mix inside the "
            "broad QOF age groups comes from their PCN or sub-ICB; kept as published."]


def build(cells: AreaCells, condition: Condition, name: str,
          adjacency: pd.DataFrame | None = None) -> Dataset:
    """The Dataset of `condition` on `cells` (PCN or sub-ICB areas); sub-ICB areas take
    `adjacency` (columns area1, area2), else the 2022 sub-ICBs' from the data directory."""
    if cells.group != condition.group:
        raise ValueError(f"cells carry register {cells.group}, condition needs "
                         f"{condition.group}")
    strata = condition.strata()
    population, pop_notes = _population(cells, condition)
    register, reg_notes = condition.register(cells.register)
    reference, ref_notes = condition.reference(cells.data_dir)
    levels = [c for c in ("sub_icb", "icb", "region") if c in cells.areas.columns]
    areas = cells.areas.reset_index()[["area", "name", *levels]]
    tables = {
        "strata": strata,
        "areas": areas,
        "population": population,
        "register": register,
        "reference": reference,
        "reference_map": pd.DataFrame({"stratum": strata["stratum"],
                                       "ref_stratum": strata["stratum"]}),
        "covariates": cells.covariates.reset_index(names="area"),
    }
    if cells.level == "sub_icb":
        if adjacency is None:
            adj = src.read(cells.data_dir, src.SUBICB_ADJACENCY)
            adjacency = pd.DataFrame({"area1": adj["loc22cd1"], "area2": adj["loc22cd2"]})
        tables["adjacency"] = adjacency
        covered = set(adjacency["area1"]) | set(adjacency["area2"])
        graph_note = [f"Adjacency: {len(adjacency)} Queen-contiguity edges between the 2022 "
                      f"sub-ICBs; {len(covered & set(areas['area']))} of {len(areas)} areas "
                      "have a neighbour."]
    else:
        graph_note = ["No adjacency for PCNs (no PCN boundaries): the hierarchy PCN < sub-ICB "
                      "< ICB < region carries the area structure."]
    files = [src.QOF_PREVALENCE, src.QOF_MAPPING, src.POP_PCN_5YR, src.POP_SINGLE_AGE,
             src.PRACTICE_MAP_2026, src.PCN_IMD, src.PRACTICE_IMD, src.PRACTICE_NON_WHITE,
             *condition.files, *([src.SUBICB_ADJACENCY] if cells.level == "sub_icb" else [])]
    manifest = {
        "name": name,
        "condition": condition.condition,
        "description": condition.description + f" Areas: {cells.level}.",
        "area_level": cells.level,
        "levels": levels,
        "sources": {f: src.CITATIONS[f] for f in files},
    }
    notes = [*cells.notes, *pop_notes, *reg_notes, *ref_notes, *graph_note,
             *_outliers(population, register, cells.level)]
    return build_dataset(tables, manifest, notes=notes)


def cells_for(data_dir: str | Path | None, group: str, level: str) -> AreaCells:
    """PCN cells of a QOF register group, aggregated to `level` unless it is ``pcn``."""
    cells = pcn_cells(data_dir, group)
    return cells if level == "pcn" else aggregate(cells, level)


#: builder -> (area level, condition): what each builder below makes, and what its
#: stand-in (`gapmodel.data.england.standin`) copies
LAYOUTS: dict[str, tuple[str, Condition]] = {
    "hypertension_pcn": ("pcn", HYPERTENSION),
    "hypertension_subicb": ("sub_icb", HYPERTENSION),
    "dementia_pcn": ("pcn", DEMENTIA),
}


def _layout_dataset(name: str, data_dir: str | Path | None) -> Dataset:
    level, condition = LAYOUTS[name]
    return build(cells_for(data_dir, condition.group, level), condition, name)


def hypertension_pcn(data_dir: str | Path | None = None) -> Dataset:
    """Hypertension 2022-23 by PCN x HSE age band (16+) x sex."""
    return _layout_dataset("hypertension_pcn", data_dir)


def hypertension_subicb(data_dir: str | Path | None = None) -> Dataset:
    """Hypertension 2022-23 by 2022 sub-ICB x HSE age band (16+) x sex, with adjacency."""
    return _layout_dataset("hypertension_subicb", data_dir)


def dementia_pcn(data_dir: str | Path | None = None) -> Dataset:
    """Dementia 2022-23 by PCN x CFAS II age band (65+) x sex."""
    return _layout_dataset("dementia_pcn", data_dir)
