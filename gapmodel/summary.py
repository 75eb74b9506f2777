"""Readable and machine-readable summaries of a fit: parameters, totals, gate, truth."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gapmodel.fit import CellDraws, FitResult

PROB = 0.9


def interval(values: np.ndarray, prob: float = PROB) -> dict[str, float]:
    """Mean, sd and the equal-tailed interval of 1-D draws."""
    tail = (1 - prob) / 2
    lo, mid, hi = np.quantile(values, [tail, 0.5, 1 - tail])
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)),
            "lower": float(lo), "median": float(mid), "upper": float(hi), "prob": prob}


def intervals(values: np.ndarray, prob: float = PROB, axis: int = -1
              ) -> dict[str, np.ndarray]:
    """Mean, sd and the equal-tailed interval of draws along `axis` (many at once), in
    float64 whatever the draws' precision."""
    tail = (1 - prob) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail], axis=axis).astype(np.float64)
    return {"mean": np.mean(values, axis=axis, dtype=np.float64),
            "sd": np.std(values, axis=axis, dtype=np.float64), "lower": lo, "upper": hi}


def totals(draws: CellDraws, prob: float = PROB) -> dict[str, dict[str, float]]:
    """Total true cases, recorded, undiagnosed and the diagnosis rate, summed per draw."""
    expected = draws.expected.sum(axis=1, dtype=np.float64)
    recorded = draws.recorded.sum(axis=1, dtype=np.float64)
    undiagnosed = draws.undiagnosed.sum(axis=1, dtype=np.float64)
    return {"expected": interval(expected, prob), "recorded": interval(recorded, prob),
            "undiagnosed": interval(undiagnosed, prob),
            "diagnosis_rate": interval(recorded / expected, prob)}


def truth_check(draws: CellDraws, truth: pd.DataFrame, prob: float = PROB
                ) -> dict[str, Any]:
    """Coverage of the true cell undiagnosed counts by the cells' intervals, and totals."""
    tail = (1 - prob) / 2
    lo, hi = np.quantile(draws.undiagnosed, [tail, 1 - tail], axis=0)
    true = truth["undiagnosed"].to_numpy()
    covered = (true >= lo) & (true <= hi)
    total = draws.undiagnosed.sum(axis=1, dtype=np.float64)
    t_lo, t_hi = np.quantile(total, [tail, 1 - tail])
    return {"cell_coverage": float(covered.mean()), "prob": prob, "cells": len(true),
            "true_total_undiagnosed": int(true.sum()),
            "total_covered": bool(t_lo <= true.sum() <= t_hi)}


def fit_summary(result: FitResult, truth: pd.DataFrame | None = None) -> dict[str, Any]:
    """Everything `gapmodel fit` prints, as JSON-ready data."""
    table = result.diagnostics
    parameters = {
        name: {"mean": row["mean"], "sd": row["sd"], "q5": row["q5"], "q50": row["q50"],
               "q95": row["q95"], "r_hat": row["r_hat"], "ess_bulk": row["ess_bulk"],
               "ess_tail": row["ess_tail"]}
        for name, row in table.iterrows()}
    out: dict[str, Any] = {
        "model": result.spec.name, "condition": result.spec.condition,
        "method": result.method, "dataset_hash": result.dataset_hash,
        "sampler": result.spec.sampler.model_dump(), "start": result.start,
        "timings": result.timings,
        "parameters": parameters, "totals": totals(result.draws), "gate": result.gate,
        "assumptions": [
            f"sigma_eps = {result.spec.prevalence.sigma_eps}: unexplained area variation in "
            "true prevalence is a sensitivity choice, not estimated from the registers; "
            "a larger value widens every interval.",
            "Prevalence covariate effects come from their priors, not from the registers.",
        ]}
    if truth is not None:
        out["truth"] = truth_check(result.draws, truth)
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as text for the terminal."""
    lines = [f"Model {summary['model']} ({summary['condition']}), {summary['method']}; "
             f"dataset {summary['dataset_hash'][:12]}"]
    lines.append("")
    lines.append(f"{'parameter':32} {'mean':>9} {'sd':>8} {'5%':>9} {'95%':>9} "
                 f"{'R-hat':>6} {'ESS':>6}")
    for name, p in summary["parameters"].items():
        lines.append(f"{name[:32]:32} {p['mean']:9.3f} {p['sd']:8.3f} {p['q5']:9.3f} "
                     f"{p['q95']:9.3f} {p['r_hat']:6.3f} {p['ess_bulk']:6.0f}")
    lines.append("")
    t = summary["totals"]
    for key in ("expected", "recorded", "undiagnosed"):
        v = t[key]
        lines.append(f"{'total ' + key:24} {v['median']:>14,.0f}   90% interval "
                     f"{v['lower']:,.0f} to {v['upper']:,.0f}")
    r = t["diagnosis_rate"]
    lines.append(f"{'diagnosis rate':24} {r['median']:>14.1%}   90% interval "
                 f"{r['lower']:.1%} to {r['upper']:.1%}")
    if "truth" in summary:
        tr = summary["truth"]
        lines.append("")
        lines.append(f"against the simulated truth: {tr['cell_coverage']:.1%} of "
                     f"{tr['cells']:,} cells' 90% intervals cover their true undiagnosed "
                     f"count; true total {tr['true_total_undiagnosed']:,} "
                     f"{'inside' if tr['total_covered'] else 'OUTSIDE'} the interval")
    lines.append("")
    for note in summary["assumptions"]:
        lines.append(f"note: {note}")
    gate = summary["gate"]
    verdict = "PASSED" if gate["passed"] else "FAILED: " + "; ".join(gate["failures"])
    c = gate["checks"]
    lines.append(f"convergence gate {verdict} (max R-hat {c['rhat']:.3f}, min bulk ESS "
                 f"{c['ess_bulk']:.0f}, min tail ESS {c['ess_tail']:.0f}, divergences "
                 f"{c['divergences']}, min E-BFMI {c['ebfmi']:.2f}"
                 + (f", Laplace error {c['laplace_error']:.1e}"
                    if "laplace_error" in c else "") + ")")
    return "\n".join(lines)
