"""Assemble the analyst report of a registry version: numbers, figures, HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gapmodel.posterior import PosteriorView, equity, inequality, top_n
from gapmodel.posterior.view import DECILE, natural_key
from gapmodel.registry import Version
from gapmodel.report import compute, figures
from gapmodel.report.assumptions import assumptions, interval_meaning
from gapmodel.report.html import render
from gapmodel.summary import PROB

#: Section keys and titles, in order.
SECTIONS = {
    "header": "Version",
    "diagnostics": "Sampler diagnostics",
    "totals": "Headline totals",
    "predictive": "Posterior predictive check",
    "caterpillar": "Diagnosis rate by area",
    "funnel": "Funnel plot",
    "equity": "Equity: diagnosis-rate ratios",
    "targets": "Top targets",
    "assumptions": "Assumptions",
}
#: Equity groupings, by the start of their name: ethnicity first, then deprivation.
ETHNIC = "ethnic"
DEPRIVATION = ("imd", "depriv")
APPROXIMATE_NOTE = ("This is an approximate fit ({method}), for exploration only: variational "
                    "approximations typically understate uncertainty, so every interval below "
                    "is likely too narrow. It can never be promoted.")


@dataclass
class Section:
    """One section: filled (`content`) or explicitly not (`unavailable` says why)."""

    key: str
    title: str
    content: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None


@dataclass(frozen=True)
class Report:
    path: Path
    sections: dict[str, Section]


def _posterior(version: Version) -> tuple[Any, str | None]:
    """The version's ArviZ DataTree, or None and the reason it cannot be read."""
    if not (version.path / "posterior.nc").exists():
        return None, "this version was saved without its posterior (posterior.nc)"
    try:
        return version.posterior(), None
    except (OSError, ValueError) as exc:
        return None, f"its posterior could not be read ({exc})"


def _summary(meta: dict[str, Any]) -> dict[str, Any]:
    return meta.get("dataset", {}).get("summary", {})


def header_section(version: Version, active: bool | None) -> Section:
    meta = version.meta
    spec = meta.get("spec", {})
    gate = meta.get("gate", {})
    method = meta.get("method", "?")
    summary = _summary(meta)
    content = {
        "model": meta.get("model"), "condition": meta.get("condition"),
        "version": meta.get("version"), "created": meta.get("created"),
        "dataset_name": meta.get("dataset", {}).get("name"),
        "dataset_hash": meta.get("dataset", {}).get("hash"),
        "method": method, "approximate": method != "nuts",
        "approximate_note": APPROXIMATE_NOTE.format(method=method.upper())
        if method != "nuts" else None,
        "sampler": spec.get("sampler", {}),
        "gate_passed": bool(gate.get("passed")), "gate_failures": gate.get("failures", []),
        "active": active, "draws": version.draws.n_draws, "cells": len(version.cells),
        "areas": int(version.cells["area"].nunique()),
        "population": int(version.cells["population"].sum()),
        "levels": summary.get("levels", {}), "attributes": list(summary.get("attributes", {})),
        "packages": meta.get("packages", {}), "timings": meta.get("timings", {}),
    }
    return Section("header", SECTIONS["header"], content)


def diagnostics_section(version: Version, posterior: Any, why_not: str | None) -> Section:
    gate = version.meta.get("gate", {})
    thresholds = gate.get("thresholds") or version.spec.gate.model_dump()
    try:
        table = version.diagnostics()
    except (OSError, ValueError) as exc:
        return Section("diagnostics", SECTIONS["diagnostics"],
                       unavailable=f"the diagnostics table could not be read ({exc})")
    rows = compute.diagnostics_rows(table, thresholds)
    stats = compute.sampler_stats(posterior)
    checks = gate.get("checks", {})
    if stats is None:
        reason = why_not or ("an approximate fit has no sampler statistics"
                             if version.meta.get("method") != "nuts"
                             else "the posterior has no sampler statistics")
        stats_note = f"Per-chain divergences and E-BFMI are not shown: {reason}."
    else:
        stats_note = None
    divergences = stats.get("divergences") if stats else None
    ebfmi = stats.get("ebfmi") if stats else None
    content = {
        "rows": rows, "thresholds": thresholds, "checks": checks,
        "worst": gate.get("worst_parameter"),
        "failing": sum(r["fail_rhat"] or r["fail_bulk"] or r["fail_tail"] for r in rows),
        "divergences": divergences,
        "divergences_total": sum(divergences) if divergences is not None
        else checks.get("divergences"),
        "divergences_fail": (sum(divergences) if divergences is not None
                             else checks.get("divergences", 0)) > thresholds["divergences"],
        "ebfmi": ebfmi,
        "ebfmi_fail": [not v >= thresholds["ebfmi"] for v in ebfmi] if ebfmi else None,
        "stats_note": stats_note,
    }
    return Section("diagnostics", SECTIONS["diagnostics"], content)


def totals_section(version: Version, prob: float) -> Section:
    t = compute.headline(version.draws, prob)
    return Section("totals", SECTIONS["totals"], {"totals": t, "prob": prob,
                                                 "draws": version.draws.n_draws})


def predictive_section(version: Version, area: compute.AreaDraws, prob: float) -> Section:
    check = compute.predictive_check(area, prob, seed=int(version.spec.sampler.seed))
    if check.table.empty:
        return Section("predictive", SECTIONS["predictive"], unavailable=(
            "no area has a fixed register total: every area has cells that no register "
            "observes, or register counts shared with other areas"))
    t = check.table
    outside = t.loc[~t["inside"]].assign(
        gap=lambda d: (d["observed"] - d["median"]).abs() / d["median"].clip(lower=1))
    content = {
        "coverage": check.coverage, "prob": prob, "checked": len(t),
        "unchecked": check.unchecked, "outside": int((~t["inside"]).sum()),
        "figure": figures.predictive_figure(check),
        "worst": outside.sort_values("gap", ascending=False).head(10).to_dict("records"),
        "beta_binomial": version.spec.likelihood.family == "beta_binomial",
    }
    return Section("predictive", SECTIONS["predictive"], content)


def caterpillar_section(area: compute.AreaDraws, overall: float, prob: float) -> Section:
    rates = compute.area_rates(area, prob)
    content = {
        "figure": figures.caterpillar_figure(rates, overall, prob), "areas": len(rates),
        "lowest": rates.head(5).to_dict("records"),
        "highest": rates.tail(5).iloc[::-1].to_dict("records"),
        "prob": prob, "labelled": len(rates) <= figures.LABEL_LIMIT,
    }
    return Section("caterpillar", SECTIONS["caterpillar"], content)


def funnel_section(area: compute.AreaDraws, overall: float) -> Section:
    data = compute.funnel(area, overall)
    flagged = data.table[data.table["outside"] == "99.8%"]
    content = {
        "figure": figures.funnel_figure(data), "overall": overall, "areas": len(data.table),
        "outside": {name: data.count_outside(name) for name in data.limits},
        "flagged": flagged.head(20).to_dict("records"), "flagged_total": len(flagged),
    }
    return Section("funnel", SECTIONS["funnel"], content)


def _is_deprivation(name: str) -> bool:
    return name.startswith(DEPRIVATION)


def equity_groupings(view: PosteriorView) -> list[tuple[str, str | None, str]]:
    """(column, reference group, description) for the equity section: ethnicity first,
    then deprivation (a stratum attribute, else area deciles of a deprivation covariate),
    then the other stratum attributes with more than one group."""
    attributes = [a for a in view.attributes if len(view.labels(a)) > 1]
    ethnic = [a for a in attributes if a.startswith(ETHNIC)]
    deprived = [a for a in attributes if _is_deprivation(a)]
    out = [(a, "White" if "White" in view.labels(a) else None, "stratum attribute")
           for a in ethnic]
    # English IMD quintiles and deciles count from 1 = most deprived: the least deprived,
    # the highest label, is the reference.
    out += [(a, max(view.labels(a), key=natural_key), "stratum attribute; 1 = most deprived")
            for a in deprived]
    if not deprived:
        out += [(c, "1", f"area decile of {c.removesuffix(DECILE)} weighted by population; "
                 "1 = lowest score, least deprived")
                for c in view.columns() if c.endswith(DECILE) and _is_deprivation(c)]
    out += [(a, None, "stratum attribute") for a in attributes
            if a not in ethnic and a not in deprived]
    return out


def _inequality(view: PosteriorView, column: str, prob: float) -> dict[str, Any] | None:
    """SII and RII from the most to the least deprived group (None if not ordered so)."""
    labels = sorted(view.labels(column), key=natural_key)
    if column.endswith(DECILE):
        labels = labels[::-1]  # a higher deprivation score is more deprived
    table = inequality(view, column, order=labels, prob=prob)
    return {"sii": table.loc["sii"].to_dict(), "rii": table.loc["rii"].to_dict(),
            "first": labels[0], "last": labels[-1]}


def equity_section(version: Version, view: PosteriorView, prob: float) -> Section:
    groupings = equity_groupings(view)
    if not groupings:
        return Section("equity", SECTIONS["equity"], unavailable=(
            "the strata have no attribute with more than one group"))
    tables: dict[str, dict[str, Any]] = {}
    for column, reference, description in groupings:
        table = equity(view, by=column, reference=reference, prob=prob)
        rows = table.rename(columns={column: "group"}).to_dict("records")
        tables[column] = {"rows": rows, "reference": table.attrs["reference"],
                          "description": description,
                          "inequality": _inequality(view, column, prob)
                          if _is_deprivation(column) else None}
    missing = [name for name, found in (
        ("ethnicity", any(c.startswith(ETHNIC) for c in tables)),
        ("deprivation", any(_is_deprivation(c) for c in tables))) if not found]
    content = {
        "figure": figures.equity_figure({c: pd.DataFrame(t["rows"])
                                         for c, t in tables.items()}, prob),
        "tables": tables, "missing": missing, "prob": prob,
    }
    return Section("equity", SECTIONS["equity"], content)


def targets_section(view: PosteriorView, n: int, prob: float) -> Section:
    by_count = top_n(view, n, level="area", by="undiagnosed", prob=prob)
    by_yield = top_n(view, n, level="area", by="yield_per_contact", prob=prob)
    content = {
        "n": len(by_count), "prob": prob, "areas": len(view.labels("area")),
        "by_count": by_count.to_dict("records"), "by_yield": by_yield.to_dict("records"),
        "figure_count": figures.top_figure(by_count, "undiagnosed",
                                           f"undiagnosed ({prob:.0%} interval)"),
        "figure_yield": figures.top_figure(
            by_yield, "yield_per_contact",
            f"undiagnosed per 100 people not on the register ({prob:.0%} interval)",
            scale=100.0),
    }
    return Section("targets", SECTIONS["targets"], content)


def assumptions_section(version: Version, prob: float) -> Section:
    return Section("assumptions", SECTIONS["assumptions"], {
        "items": assumptions(version.spec, version.meta), "prob": prob,
        "interval": interval_meaning(prob)})


def build_sections(version: Version, *, active: bool | None = None, top: int = 20,
                   prob: float = PROB) -> dict[str, Section]:
    """Every section of the report for a version, filled or saying why not."""
    posterior, why_not = _posterior(version)
    area = compute.area_draws(version.cells, version.draws)
    view = PosteriorView.from_version(version)
    overall = float(np.median(compute.safe_ratio(area.recorded.sum(axis=1),
                                                 area.expected.sum(axis=1))))
    sections = [
        header_section(version, active),
        diagnostics_section(version, posterior, why_not),
        totals_section(version, prob),
        predictive_section(version, area, prob),
        caterpillar_section(area, overall, prob),
        funnel_section(area, overall),
        equity_section(version, view, prob),
        targets_section(view, top, prob),
        assumptions_section(version, prob),
    ]
    return {s.key: s for s in sections}


def build_report(version: Version, out: str | Path, *, active: bool | None = None,
                 top: int = 20, prob: float = PROB) -> Report:
    """Write `out/index.html`, a self-contained report of the version; returns its path and
    the sections' content."""
    sections = build_sections(version, active=active, top=top, prob=prob)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.html"
    html = render(sections, title=f"{version.meta.get('model')} {version.id}")
    tmp = path.with_name(".index.html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return Report(path=path, sections=sections)

