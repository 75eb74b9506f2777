"""Report figures: matplotlib (no pyplot state) rendered to self-contained inline SVG.

Dense layers (hundreds of areas) are rasterised inside the SVG, so a figure of 1,300
areas stays small; the SVG carries no external references and ids unique per figure.
"""

from __future__ import annotations

import io
import itertools
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gapmodel.report.compute import Funnel, PredictiveCheck

#: Above this many areas, area labels are dropped and dense layers rasterised.
LABEL_LIMIT = 60
RASTER_LIMIT = 300
INSIDE, OUTSIDE, ACCENT, GREY = "#3b6ea5", "#c0392b", "#e67e22", "#888888"
_counter = itertools.count(1)


def to_svg(fig: Figure, label: str) -> str:
    """The figure as an inline <svg> element: no XML prologue, metadata or namespace URLs,
    ids prefixed so several figures can share one HTML page."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    prefix = f"f{next(_counter)}-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m[1]}"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m[1]}{prefix}{m[2]}", text)
    label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace("<svg", f'<svg role="img" aria-label="{label}"', 1)


def _figure(width: float, height: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def predictive_figure(check: PredictiveCheck) -> str:
    """Observed register totals relative to the predictive median, with the predictive
    interval, areas ordered by size; and the histogram of predictive percentiles."""
    t = check.table.sort_values("median", kind="stable").reset_index(drop=True)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax, hist = fig.subplots(1, 2, width_ratios=(2.4, 1))
    x = np.arange(len(t))
    base = np.maximum(t["median"].to_numpy(), 1.0)
    dense = len(t) > RASTER_LIMIT
    ax.vlines(x, 100 * (t["lower"] / base - 1), 100 * (t["upper"] / base - 1), color=GREY,
              linewidth=0.6 if dense else 2.0, alpha=0.6, rasterized=dense,
              label=f"{check.prob:.0%} predictive interval")
    rel = 100 * (t["observed"] / base - 1)
    inside = t["inside"].to_numpy()
    ax.scatter(x[inside], rel[inside], s=4 if dense else 14, color=INSIDE, zorder=3,
               rasterized=dense, label="observed, inside")
    ax.scatter(x[~inside], rel[~inside], s=8 if dense else 20, color=OUTSIDE, zorder=4,
               rasterized=dense, label="observed, outside")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("areas, ordered by predicted register size")
    ax.set_ylabel("% difference from predictive median")
    fig.suptitle("Register totals against the posterior predictive distribution")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8,
              frameon=False)
    if len(t) <= LABEL_LIMIT:
        ax.set_xticks(x, t["area"].astype(str), rotation=90, fontsize=7)
    else:
        ax.set_xticks([])
    hist.hist(t["percentile"], bins=np.linspace(0, 1, 11), color=INSIDE, edgecolor="white")
    hist.axhline(len(t) / 10, color="black", linestyle="--", linewidth=0.8,
                 label="uniform (a calibrated model)")
    hist.set_xlabel("predictive percentile of the observed total")
    hist.set_ylabel("areas")
    hist.legend(fontsize=8, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return to_svg(fig, "posterior predictive check of area register totals")


def caterpillar_figure(rates: pd.DataFrame, overall: float, prob: float) -> str:
    """Area diagnosis rates (median and interval), sorted; labelled only when few."""
    n = len(rates)
    many = n > LABEL_LIMIT
    fig, ax = _figure(9, 4.5 if many else max(2.5, 0.22 * n + 1))
    y = np.arange(n)
    dense = n > RASTER_LIMIT
    ax.hlines(y, 100 * rates["lower"], 100 * rates["upper"], color=INSIDE,
              linewidth=0.4 if many else 1.6, alpha=0.7 if many else 1.0, rasterized=dense)
    ax.scatter(100 * rates["rate"], y, s=1.5 if many else 12, color="black", zorder=3,
               rasterized=dense)
    ax.axvline(100 * overall, color=ACCENT, linewidth=1.2,
               label=f"overall {100 * overall:.1f}%")
    if many:
        ax.set_yticks([])
        ax.set_ylabel(f"{n:,} areas, sorted by diagnosis rate")
    else:
        ax.set_yticks(y, rates["area"].astype(str), fontsize=7)
    ax.set_ylim(-1, n)
    ax.set_xlabel(f"diagnosis rate (%): median and {prob:.0%} interval")
    ax.set_title("Diagnosis rate by area")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return to_svg(fig, "caterpillar plot of area diagnosis rates")


def funnel_figure(data: Funnel) -> str:
    """Diagnosis rate against expected cases, with control limits around the overall rate."""
    t = data.table
    fig, ax = _figure(9, 4.8)
    expected = t["expected"].to_numpy()
    lo_e, hi_e = max(expected.min() * 0.8, 1e-3), expected.max() * 1.2
    grid = np.geomspace(lo_e, hi_e, 200)
    for name, style in zip(sorted(data.limits, key=data.limits.get), ("--", ":"),
                           strict=True):
        lower, upper = data.limit(grid, name)
        ax.plot(grid, 100 * lower, style, color="black", linewidth=0.9, label=f"{name} limits")
        ax.plot(grid, 100 * upper, style, color="black", linewidth=0.9)
    ax.axhline(100 * data.overall, color=ACCENT, linewidth=1.2,
               label=f"overall {100 * data.overall:.1f}%")
    dense = len(t) > RASTER_LIMIT
    outer = max(data.limits, key=data.limits.get)
    flag = (t["outside"] == outer).to_numpy()
    ax.scatter(expected[~flag], 100 * t["rate"][~flag], s=6 if dense else 18, color=INSIDE,
               alpha=0.8, rasterized=dense, label=f"inside {outer} limits")
    ax.scatter(expected[flag], 100 * t["rate"][flag], s=9 if dense else 24, color=OUTSIDE,
               rasterized=dense, label=f"outside {outer} limits")
    ax.set_xscale("log")
    ax.set_xlabel("expected cases in the area (posterior mean, log scale)")
    ax.set_ylabel("diagnosis rate (%), posterior median")
    ax.set_title("Funnel plot of area diagnosis rates")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return to_svg(fig, "funnel plot of area diagnosis rates")


def equity_figure(tables: dict[str, pd.DataFrame], prob: float) -> str:
    """Diagnosis-rate ratios against each grouping's reference group, with intervals
    (tables as `gapmodel.posterior.equity` makes them, the group column named 'group')."""
    rows = sum(len(t) for t in tables.values())
    fig = Figure(figsize=(8, 0.32 * rows + 1.2 * len(tables) + 0.6), layout="constrained")
    axes = fig.subplots(len(tables), 1, squeeze=False,
                        height_ratios=[len(t) + 1 for t in tables.values()])[:, 0]
    for ax, (attribute, t) in zip(axes, tables.items(), strict=True):
        y = np.arange(len(t))[::-1]
        ref = t["reference"].to_numpy(dtype=bool)
        ax.hlines(y, t["ratio_lower"], t["ratio_upper"], color=INSIDE, linewidth=2)
        ax.scatter(t["ratio_mean"], y, color=np.where(ref, ACCENT, "black"), zorder=3, s=16)
        ax.axvline(1.0, color=GREY, linewidth=0.8)
        labels = [f"{g} (reference)" if r else str(g)
                  for g, r in zip(t["group"], ref, strict=True)]
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(-0.8, len(t) - 0.2)
        ax.set_title(attribute.replace("_", " "), fontsize=10, loc="left")
    axes[-1].set_xlabel(f"diagnosis-rate ratio to the reference group ({prob:.0%} interval)")
    return to_svg(fig, "diagnosis-rate ratios by group")


def top_figure(table: pd.DataFrame, measure: str, label: str, scale: float = 1.0) -> str:
    """Top areas: mean and interval of the ranking measure (columns `<measure>_mean`,
    `_lower`, `_upper`), first ranked on top."""
    fig, ax = _figure(5.5, 0.22 * len(table) + 1.0)
    y = np.arange(len(table))[::-1]
    ax.hlines(y, scale * table[f"{measure}_lower"], scale * table[f"{measure}_upper"],
              color=INSIDE, linewidth=2)
    ax.scatter(scale * table[f"{measure}_mean"], y, color="black", zorder=3, s=14)
    ax.set_yticks(y, table["area"].astype(str), fontsize=7)
    ax.set_xlabel(label)
    return to_svg(fig, f"top areas by {label}")
