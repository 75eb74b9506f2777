"""The derive step (cell draws from posterior draws), side by side across revisions.

    .venv/bin/python bench/derive.py                       # hypertension by PCN, working tree
    .venv/bin/python bench/derive.py --revisions c16f6b2 HEAD
    .venv/bin/python bench/derive.py --specs models/dementia_england_pcn.yaml --draws 600

After sampling, `gapmodel.fit` turns every posterior draw into cell draws (pi, theta, the
recorded and undiagnosed counts) and sums the national gap per draw. This times that step
alone, on the posterior of each spec's active version in the registry, in a fresh process
per (spec, revision), one BLAS thread. Prints the wall time of the model's build and of the
derive step, milliseconds per posterior draw, peak memory, and the national gap's mean and
90% interval, which must agree across revisions (the same draws and the same seed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from common import (
    ROOT,
    add_revisions_option,
    checkouts,
    limit_blas,
    machine_line,
    run_at,
    spec_file,
)


def run_one(spec_path: str, data_dir: str, registry: str, draws: int | None) -> dict:
    """Derive the active version's posterior in this process and measure it."""
    import numpy as np

    from gapmodel.fit import _derive_all
    from gapmodel.model import build_model
    from gapmodel.registry import Registry
    from gapmodel.sources import load_spec_data
    from gapmodel.spec import ModelSpec

    limit_blas(1)
    spec = ModelSpec.from_yaml(spec_file(spec_path))
    dataset, _ = load_spec_data(spec, data_dir)
    version = Registry(registry).active(spec.name)
    posterior = version.posterior()["posterior"].to_dataset()
    if draws:
        posterior = posterior.isel(draw=slice(0, draws))
    start = time.perf_counter()
    model, data = build_model(dataset, spec)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    total = _derive_all(model, data, posterior, spec.derived_draws, spec.sampler.seed)[0]
    derive_s = time.perf_counter() - start
    n = int(total.size)
    q5, q95 = np.quantile(total, [0.05, 0.95])
    return {"spec": spec.name, "version": version.id, "draws": n, "cells": data.n_cells,
            "build_s": build_s, "derive_s": derive_s, "ms_per_draw": 1e3 * derive_s / n,
            "gap_mean": float(total.mean()), "gap_q5": float(q5), "gap_q95": float(q95),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=["models/hypertension_england_pcn.yaml"])
    parser.add_argument("--draws", type=int, default=None,
                        help="first draws per chain of the posterior (default: all)")
    parser.add_argument("--data", default=os.environ.get("GAPMODEL_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--registry", default=str(ROOT / "models" / "registry"))
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    add_revisions_option(parser)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.specs[0], args.data, args.registry, args.draws)))
        return
    print(machine_line(1, None), flush=True)
    rows = []
    with checkouts(args.revisions) as trees:
        for spec in args.specs:
            for rev in args.revisions:
                cmd = [sys.executable, __file__, "--one", "--specs", spec, "--data",
                       args.data, "--registry", args.registry]
                if args.draws:
                    cmd += ["--draws", str(args.draws)]
                row = run_at(cmd, {"spec": Path(spec).stem}, trees[rev], rev, args.timeout)
                print("done:", _format(row), flush=True)
                rows.append(row)
    print()
    print(report(rows))


def report(rows: list[dict]) -> str:
    lines = [f"{'spec':26} {'rev':>8} {'draws':>6} {'cells':>7} {'build s':>8} "
             f"{'derive s':>9} {'ms/draw':>8} {'peak MB':>8}  national gap, mean [90%]"]
    return "\n".join(lines + [_format(row) for row in rows])


def _format(row: dict) -> str:
    head = f"{row['spec']:26} {row.get('rev', 'work'):>8}"
    if "note" in row:
        return f"{head} {row['note']}"
    return (f"{head} {row['draws']:6d} {row['cells']:7d} {row['build_s']:8.1f} "
            f"{row['derive_s']:9.1f} {row['ms_per_draw']:8.1f} {row['peak_mb']:8.0f}  "
            f"{row['gap_mean']:,.0f} [{row['gap_q5']:,.0f}, {row['gap_q95']:,.0f}]")


if __name__ == "__main__":
    main()
