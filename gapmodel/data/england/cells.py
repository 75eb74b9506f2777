"""Practice-level harmonisation shared by every England builder.

`pcn_cells` turns the practice files into PCN areas with an all-age population by sex
and fine age band (2026 composition scaled to the 2022-23 list size), the all-age
register count and the covariates; `aggregate` sums them to sub-ICBs. Every choice made
on the way is written to `AreaCells.notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gapmodel.data.england import sources as src

SEXES = ("F", "M")
AGE5 = ("0-4", "5-9", "10-14", "15-19", "20-24", "25-29", "30-34", "35-39", "40-44",
        "45-49", "50-54", "55-59", "60-64", "65-69", "70-74", "75-79", "80-84", "85-89", "90+")
#: Fine age bins: the 5-year bands with 15-19 split into 15 and 16-19.
FINE_AGES = ("0-4", "5-9", "10-14", "15", "16-19", *AGE5[4:])
FINE = tuple(f"{s}|{a}" for s in SEXES for a in FINE_AGES)
SEX_CODES = {"FEMALE": "F", "MALE": "M"}
UNALLOCATED = "U"
COVARIATES = ("imd_score", "pct_non_white")
#: QOF 2022-23 list sizes by age group used to calibrate the age composition.
AGE_LISTS = {"16OV": "list_16ov", "50OV": "list_50ov"}
#: Fine bins in each calibration segment: under 16, 16-49, 50+.
SEGMENTS = {
    "under16": ("0-4", "5-9", "10-14", "15"),
    "16to49": ("16-19", "20-24", "25-29", "30-34", "35-39", "40-44", "45-49"),
    "50plus": AGE5[10:],
}


def fmt(x: float) -> str:
    return f"{x:,.0f}"


@dataclass(frozen=True)
class AreaCells:
    """Areas with all-age fine populations, raw register counts and covariates.

    * ``areas``: index ``area``; ``name``, the parent levels (``sub_icb``, ``icb``,
      ``region`` from the coarsest level kept), their ``*_name`` and ``list_size``
      (QOF 2022-23 registered patients, all ages);
    * ``population``: index ``area``, columns `FINE` (``sex|age``), real-valued, each row
      summing to the area's ``list_size``;
    * ``register``: the all-age QOF register count per area (``group`` names it);
    * ``covariates``: index ``area``, `COVARIATES`, gaps filled (see ``notes``);
    * ``data_dir``: the directory the files were read from.
    """

    data_dir: Path
    level: str
    group: str
    areas: pd.DataFrame
    population: pd.DataFrame
    register: pd.Series
    covariates: pd.DataFrame
    notes: tuple[str, ...] = field(default=())


def _practices(data_dir: Path, group: str, notes: list[str]) -> pd.DataFrame:
    """One row per QOF 2022-23 practice: geography, list size, the group's register."""
    prev = src.read(data_dir, src.QOF_PREVALENCE)
    mapping = src.read(data_dir, src.QOF_MAPPING)
    rows = prev[(prev["GROUP_CODE"] == group) & (prev["PATIENT_LIST_TYPE"] == "TOTAL")]
    if rows.empty:
        raise ValueError(f"{src.QOF_PREVALENCE} has no {group} rows with list type TOTAL")
    if rows["PRACTICE_CODE"].duplicated().any():
        raise ValueError(f"{src.QOF_PREVALENCE}: duplicate {group} rows per practice")
    qof = pd.DataFrame({"practice": rows["PRACTICE_CODE"].to_numpy(),
                        "register": src.number(rows["REGISTER"]).to_numpy(),
                        "list_size": src.number(rows["PRACTICE_LIST_SIZE"]).to_numpy()})
    for list_type, column in AGE_LISTS.items():
        lists = prev[prev["PATIENT_LIST_TYPE"] == list_type].drop_duplicates("PRACTICE_CODE")
        qof[column] = qof["practice"].map(src.number(lists["PRACTICE_LIST_SIZE"])
                                          .set_axis(lists["PRACTICE_CODE"]))
    bad = qof["register"].isna() | qof["list_size"].isna()
    if bad.any():
        notes.append(f"QOF {group}: {int(bad.sum())} practice(s) without a register count or "
                     f"list size dropped ({', '.join(qof.loc[bad, 'practice'][:10])})")
        qof = qof[~bad]
    geo = mapping.rename(columns={
        "PRACTICE_CODE": "practice", "PCN_ODS_CODE": "pcn", "PCN_NAME": "pcn_name",
        "SUB_ICB_ONS_CODE": "sub_icb", "SUB_ICB_NAME": "sub_icb_name",
        "ICB_ONS_CODE": "icb", "ICB_NAME": "icb_name", "REGION_ONS_CODE": "region",
        "REGION_NAME": "region_name"})
    geo = geo[["practice", "pcn", "pcn_name", "sub_icb", "sub_icb_name", "icb", "icb_name",
               "region", "region_name"]].drop_duplicates("practice")
    only_qof = qof[~qof["practice"].isin(geo["practice"])]
    only_map = geo[~geo["practice"].isin(qof["practice"])]
    notes.append(
        f"Practices: {len(qof):,} in the QOF 2022-23 {group} register file, {len(geo):,} in the "
        f"QOF 2022-23 geography mapping; {len(only_qof)} in the register file only (list size "
        f"{fmt(only_qof['list_size'].sum())}, dropped: no geography) and {len(only_map)} in "
        "the mapping only (no register row, dropped).")
    return qof.merge(geo, on="practice", how="inner")


def _area_codes(practices: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """PCN areas; unallocated practices and PCNs straddling sub-ICBs split by sub-ICB."""
    p = practices.copy()
    spans = p.groupby("pcn")["sub_icb"].nunique()
    split = set(spans.index[spans > 1]) - {UNALLOCATED}
    whole = ~p["pcn"].isin(split) & (p["pcn"] != UNALLOCATED)
    p["area"] = np.where(whole, p["pcn"], p["pcn"] + "-" + p["sub_icb"])
    p["name"] = np.where(whole, p["pcn_name"],
                         p["pcn_name"] + " (part in " + p["sub_icb_name"] + ")")
    unalloc = p[p["pcn"] == UNALLOCATED]
    p.loc[p["pcn"] == UNALLOCATED, "name"] = "Unallocated practices, " + unalloc["sub_icb_name"]
    notes.append(
        f"Unallocated practices (PCN code '{UNALLOCATED}'): {len(unalloc)} practices, list size "
        f"{fmt(unalloc['list_size'].sum())}, grouped into one pseudo-PCN per sub-ICB "
        f"('U-<sub-ICB ONS code>'): {unalloc['sub_icb'].nunique()} pseudo-PCNs.")
    if split:
        parts = p[p["pcn"].isin(split)]
        icbs = parts.groupby("pcn")["icb"].nunique()
        notes.append(
            f"{len(split)} PCN(s) have practices in more than one 2022 sub-ICB "
            f"({int((icbs > 1).sum())} in more than one ICB): {', '.join(sorted(split))}; each "
            f"is split into one area per sub-ICB ('<PCN>-<sub-ICB>'), "
            f"{parts['area'].nunique()} areas, so that areas nest in sub-ICBs and the PCN "
            "and sub-ICB datasets have the same cells.")
    return p


def _pcn_composition(data_dir: Path, notes: list[str]) -> pd.DataFrame:
    """2026 PCN age-sex composition on the FINE bins (rows sum to 1)."""
    pop = src.read(data_dir, src.POP_PCN_5YR)
    single = src.read(data_dir, src.POP_SINGLE_AGE)
    pop = pop.assign(sex=pop["SEX"].str.upper().map(SEX_CODES),
                     n=src.number(pop["NUMBER_OF_PATIENTS"]))
    unknown = pop["sex"].isna() | ~pop["AGE_GROUP_5"].isin(AGE5) | pop["n"].isna()
    if unknown.any():
        notes.append(f"{src.POP_PCN_5YR}: {int(unknown.sum())} row(s) with another sex or age "
                     f"group or no count ignored ({fmt(pop.loc[unknown, 'n'].sum())} patients)")
    pop = pop[~unknown]
    wide = pop.pivot_table(index="PCN_CODE", columns=["sex", "AGE_GROUP_5"], values="n",
                           aggfunc="sum", fill_value=0.0)
    wide = wide.reindex(columns=pd.MultiIndex.from_product([SEXES, AGE5]), fill_value=0.0)
    # Share of 15-year-olds among 15-19, by sex: national, from the single-year file.
    reg = single[single["ORG_TYPE"] == "Comm Region"]
    reg = reg.assign(sex=reg["SEX"].str.upper().map(SEX_CODES),
                     n=src.number(reg["NUMBER_OF_PATIENTS"]))
    share15 = {}
    for sex in SEXES:
        rows = reg[reg["sex"] == sex]
        n15 = rows.loc[rows["AGE"] == "15", "n"].sum()
        n15_19 = rows.loc[rows["AGE"].isin(["15", "16", "17", "18", "19"]), "n"].sum()
        share15[sex] = n15 / n15_19 if n15_19 > 0 else 0.2
    notes.append(
        "Age 15-19 split into 15 and 16-19 with the national share of 15-year-olds among "
        f"15-19 registered patients (Aug 2026, commissioning regions summed): "
        f"F {share15['F']:.4f}, M {share15['M']:.4f} (uniform single years would give 0.2).")
    out = pd.DataFrame(index=wide.index)
    for sex in SEXES:
        for age in AGE5:
            x = wide[(sex, age)].to_numpy(dtype=float)
            if age == "15-19":
                out[f"{sex}|15"] = x * share15[sex]
                out[f"{sex}|16-19"] = x * (1 - share15[sex])
            else:
                out[f"{sex}|{age}"] = x
    out = out[list(FINE)]
    total = out.sum(axis=1)
    out = out[total > 0].div(total[total > 0], axis=0)
    short = wide.index[(wide == 0).any(axis=1)]
    if len(short):
        notes.append(f"{src.POP_PCN_5YR}: {len(short)} PCN(s) have no patients in some "
                     f"sex/age bands ({', '.join(short[:5])}); their composition has zeros there")
    return out


def _practice_composition(data_dir: Path, p: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Each practice's FINE composition: its 2022-23 PCN in 2026, else its 2026 PCN, else
    its 2022 sub-ICB (list-size weighted over the practices matched directly)."""
    comp = _pcn_composition(data_dir, notes)
    map26 = src.read(data_dir, src.PRACTICE_MAP_2026).drop_duplicates("PRACTICE_CODE")
    pcn26 = p["practice"].map(map26.set_index("PRACTICE_CODE")["PCN_CODE"])
    known = set(comp.index) - {UNALLOCATED}
    pcns23 = set(p["pcn"]) - {UNALLOCATED}
    step1 = p["pcn"].isin(known).to_numpy()
    step2 = ~step1 & pcn26.isin(known).to_numpy()
    step3 = ~step1 & ~step2
    matrix = np.zeros((len(p), len(FINE)))
    matrix[step1] = comp.loc[p.loc[step1, "pcn"]].to_numpy()
    matrix[step2] = comp.loc[pcn26[step2]].to_numpy()
    weights = p["list_size"].to_numpy()[:, None] * matrix
    weights[~step1] = 0.0
    by_sub = pd.DataFrame(weights, columns=FINE).groupby(p["sub_icb"].to_numpy()).sum()
    national = weights.sum(axis=0) / weights.sum()
    sub_comp = by_sub.div(by_sub.sum(axis=1).replace(0.0, np.nan), axis=0)
    for i in np.flatnonzero(step3):
        row = sub_comp.loc[p["sub_icb"].iloc[i]] if p["sub_icb"].iloc[i] in sub_comp.index \
            else None
        matrix[i] = national if row is None or row.isna().any() else row.to_numpy()
    unmatched = sorted(pcns23 - known)
    ls = p["list_size"]
    not_in_23 = sorted(known - pcns23)
    notes.append(
        f"PCNs 2022-23 vs Aug 2026 population file: {len(pcns23 & known):,} of {len(pcns23):,} "
        f"QOF PCNs found; {len(unmatched)} not found ({', '.join(unmatched[:30])}; "
        f"{int(p['pcn'].isin(unmatched).sum())} practices, list size "
        f"{fmt(ls[p['pcn'].isin(unmatched)].sum())}); {len(not_in_23)} PCNs of 2026 are not "
        "in QOF 2022-23 (not used).")
    notes.append(
        "Age-sex composition per practice: the Aug 2026 composition of its 2022-23 PCN for "
        f"{int(step1.sum()):,} practices (list size {fmt(ls[step1].sum())}); of its Aug 2026 "
        f"PCN (practice found in the 2026 practice map) for {int(step2.sum())} practices "
        f"(list size {fmt(ls[step2].sum())}); of its 2022 sub-ICB (list-size weighted over the "
        f"directly matched practices) for {int(step3.sum())} practices (list size "
        f"{fmt(ls[step3].sum())}). Scaled to the practice's 2022-23 QOF list size.")
    missing26 = ~p["practice"].isin(map26["PRACTICE_CODE"])
    notes.append(
        f"{int(missing26.sum())} QOF 2022-23 practices (list size "
        f"{fmt(ls[missing26].sum())}) are not in the Aug 2026 practice map (closed or merged "
        "since); only the fallback above depends on that map.")
    return pd.DataFrame(matrix, columns=FINE, index=p.index)


def _calibrate(p: pd.DataFrame, comp: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Practice populations on FINE: composition x list size, then each segment (under 16,
    16-49, 50+) rescaled to the practice's QOF 2022-23 list sizes (TOTAL, 16OV, 50OV)."""
    total = p["list_size"].to_numpy(dtype=float)
    fine = comp.to_numpy() * total[:, None]
    before = fine.copy()
    o16, o50 = p["list_16ov"].to_numpy(dtype=float), p["list_50ov"].to_numpy(dtype=float)
    ok = np.isfinite(o16) & np.isfinite(o50) & (o50 <= o16) & (o16 <= total)
    targets = np.column_stack([total - o16, o16 - o50, o50])
    national = fine.sum(axis=0)
    borrowed = 0
    for j, ages in enumerate(SEGMENTS.values()):
        idx = [FINE.index(f"{s}|{a}") for s in SEXES for a in ages]
        seg = fine[:, idx]
        mass = seg.sum(axis=1)
        empty = ok & (mass <= 0) & (targets[:, j] > 0)
        shape = seg / np.where(mass > 0, mass, 1.0)[:, None]
        shape[empty] = national[idx] / national[idx].sum()
        borrowed += int(empty.sum())
        fine[np.ix_(ok, idx)] = (shape * targets[:, j][:, None])[ok]
    i16 = [FINE.index(f"{s}|{a}") for s in SEXES for a in (*SEGMENTS["16to49"],
                                                             *SEGMENTS["50plus"])]
    i65 = [FINE.index(f"{s}|{a}") for s in SEXES for a in AGE5[13:]]
    notes.append(
        "Age calibration to 2022-23: within each practice the composition's under-16, 16-49 "
        "and 50+ segments are rescaled to the QOF 2022-23 list sizes by age group (TOTAL, "
        f"16OV from RA, 50OV from OST) for {int(ok.sum()):,} practices; "
        f"{int((~ok).sum())} practices (list size {fmt(total[~ok].sum())}) lack usable age "
        "group list sizes and keep the uncalibrated composition"
        + (f"; {borrowed} empty segment(s) took the national shape" if borrowed else "")
        + f". National effect: 16+ {fmt(before[:, i16].sum())} -> {fmt(fine[:, i16].sum())}, "
        f"65+ {fmt(before[:, i65].sum())} -> {fmt(fine[:, i65].sum())} (the Aug 2026 "
        "composition is older than the 2022-23 lists).")
    return pd.DataFrame(fine, columns=FINE, index=p.index)


def _weighted(key: pd.Series, value: pd.Series, weight: pd.Series) -> pd.Series:
    """Weighted mean of value by key over rows with a value and a positive weight."""
    ok = value.notna() & weight.notna() & (weight > 0)
    frame = pd.DataFrame({"k": key[ok], "wx": (value * weight)[ok], "w": weight[ok]})
    sums = frame.groupby("k")[["wx", "w"]].sum()
    return sums["wx"] / sums["w"]


def _fill_from_sub_icb(values: pd.Series, areas: pd.DataFrame, name: str,
                       notes: list[str]) -> pd.Series:
    """Fill missing area values with their sub-ICB's list-size weighted mean."""
    missing = values.isna()
    if not missing.any():
        notes.append(f"Covariate {name}: no area needed filling from its sub-ICB.")
        return values
    sub = _weighted(areas["sub_icb"], values, areas["list_size"])
    filled = values.fillna(areas["sub_icb"].map(sub))
    national = float(np.average(values[~missing], weights=areas.loc[~missing, "list_size"]))
    still = filled.isna()
    filled = filled.fillna(national)
    notes.append(
        f"Covariate {name}: {int(missing.sum())} area(s) (list size "
        f"{fmt(areas.loc[missing, 'list_size'].sum())}) had no value and were given their "
        f"sub-ICB's list-size weighted mean ({', '.join(values.index[missing][:10])})"
        + (f"; {int(still.sum())} with no sub-ICB value got the national mean" if still.any()
           else "") + ".")
    return filled


def _covariates(data_dir: Path, p: pd.DataFrame, areas: pd.DataFrame,
                notes: list[str]) -> pd.DataFrame:
    pcn_imd = src.read(data_dir, src.PCN_IMD)
    pcn_imd = pcn_imd[pcn_imd["pcn_code"] != UNALLOCATED].drop_duplicates("pcn_code")
    pcn_score = src.number(pcn_imd["imd_score"]).set_axis(pcn_imd["pcn_code"])
    prac_imd = src.read(data_dir, src.PRACTICE_IMD).drop_duplicates("practice_code")
    prac_score = p["practice"].map(src.number(prac_imd["imd_score"])
                                   .set_axis(prac_imd["practice_code"]))
    whole = areas.index.isin(pcn_score.dropna().index)
    imd = pd.Series(np.nan, index=areas.index)
    imd[whole] = pcn_score.reindex(areas.index[whole]).to_numpy()
    from_practices = _weighted(p["area"], prac_score, p["list_size"])
    use = ~whole & areas.index.isin(from_practices.index)
    imd[use] = from_practices.reindex(areas.index[use]).to_numpy()
    notes.append(
        f"Covariate imd_score (IMD 2019, patient-weighted): {int(whole.sum()):,} areas from the "
        f"PCN file; {int(use.sum())} areas (unallocated pseudo-PCNs, split PCNs and PCNs "
        "absent from the PCN file) from the list-size weighted mean of their practices' "
        f"scores in the practice file ({int(prac_score.isna().sum())} practices lack one).")
    imd = _fill_from_sub_icb(imd, areas, "imd_score", notes)

    nw = src.read(data_dir, src.PRACTICE_NON_WHITE).drop_duplicates("practice_code")
    nw = nw.set_index("practice_code")
    share = p["practice"].map(src.number(nw["pct_non_white"]))
    weight = p["practice"].map(src.number(nw["reg_popn"]))
    lacking = share.isna() | weight.isna()
    notes.append(
        f"Covariate pct_non_white (Census 2021, percent of registered patients): practice "
        f"shares weighted by reg_popn; {int(lacking.sum())} QOF practices (list size "
        f"{fmt(p.loc[lacking, 'list_size'].sum())}) have no value in the practice file "
        f"and are left out of their area's mean; "
        f"{int((~nw.index.isin(p['practice'])).sum())} practices of that file are not in QOF "
        "2022-23 (ignored).")
    pct = (100.0 * _weighted(p["area"], share, weight)).reindex(areas.index)
    pct = _fill_from_sub_icb(pct, areas, "pct_non_white", notes)
    return pd.DataFrame({"imd_score": imd, "pct_non_white": pct}, index=areas.index)


def pcn_cells(data_dir: str | Path | None, group: str) -> AreaCells:
    """PCN areas (2022-23) with all-age fine populations, the QOF `group` register
    (e.g. ``HYP``, ``DEM``) and covariates."""
    data_dir = src.data_directory(data_dir)
    notes: list[str] = []
    p = _area_codes(_practices(data_dir, group, notes), notes)
    comp = _practice_composition(data_dir, p, notes)
    fine = _calibrate(p, comp, notes).groupby(p["area"]).sum()
    keep = ["name", "sub_icb", "sub_icb_name", "icb", "icb_name", "region", "region_name"]
    areas = p.groupby("area")[keep].first()
    areas["list_size"] = p.groupby("area")["list_size"].sum()
    areas = areas.sort_values(["region", "icb", "sub_icb"], kind="stable")
    register = p.groupby("area")["register"].sum().reindex(areas.index)
    notes.append(
        f"QOF 2022-23 {group} register (all ages, 31 Mar 2023) summed from {len(p):,} practices "
        f"to {len(areas):,} areas: total {fmt(register.sum())}; list size total "
        f"{fmt(areas['list_size'].sum())} (all ages, the population the composition is "
        "scaled to).")
    covariates = _covariates(data_dir, p, areas, notes)
    return AreaCells(data_dir=data_dir, level="pcn", group=group, areas=areas,
                     population=fine.reindex(areas.index), register=register,
                     covariates=covariates, notes=tuple(notes))


def aggregate(cells: AreaCells, level: str = "sub_icb") -> AreaCells:
    """Sum areas to a coarser level of their hierarchy: populations and registers add,
    covariates are list-size weighted means."""
    order = ["sub_icb", "icb", "region"]
    if level not in order:
        raise ValueError(f"cannot aggregate to '{level}'; choose one of {order}")
    parents = order[order.index(level) + 1:]
    a = cells.areas
    areas = a.groupby(level, sort=False)[[f"{level}_name",
                                          *[c for q in parents for c in (q, f"{q}_name")]]].first()
    areas = areas.rename(columns={f"{level}_name": "name"})
    areas["list_size"] = a.groupby(level, sort=False)["list_size"].sum()
    areas.index.name = "area"
    key = a[level]
    population = cells.population.groupby(key, sort=False).sum().reindex(areas.index)
    register = cells.register.groupby(key, sort=False).sum().reindex(areas.index)
    covariates = pd.DataFrame({c: _weighted(key, cells.covariates[c], a["list_size"])
                               for c in cells.covariates.columns}).reindex(areas.index)
    notes = [*cells.notes,
             f"Aggregated {len(a):,} {cells.level} areas to {len(areas):,} {level} areas: "
             "populations and registers summed, covariates list-size weighted means of the "
             f"{cells.level} values."]
    return AreaCells(data_dir=cells.data_dir, level=level, group=cells.group, areas=areas,
                     population=population, register=register, covariates=covariates,
                     notes=tuple(notes))


def largest_remainder(values: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Integers per row, proportional to `values`, summing exactly to `totals`."""
    values = np.asarray(values, dtype=float)
    totals = np.rint(np.asarray(totals, dtype=float)).astype(np.int64)
    rows = values.sum(axis=1)
    if np.any((rows <= 0) & (totals > 0)):
        raise ValueError("a row with a positive total has no composition to share it by")
    scaled = values / np.where(rows > 0, rows, 1.0)[:, None] * totals[:, None]
    base = np.floor(scaled)
    deficit = totals - base.sum(axis=1).astype(np.int64)
    order = np.argsort(-(scaled - base), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(values.shape[1]), order.shape),
                      axis=1)
    return (base + (ranks < deficit[:, None])).astype(np.int64)
