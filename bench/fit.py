"""Benchmark fits: nutpie vs PyMC's default NUTS vs numpyro, and the spec's model written
plainly, side by side in one run.

    .venv/bin/python bench/fit.py                      # synthetic default + England PCN
    .venv/bin/python bench/fit.py --specs models/synthetic_icb.yaml --areas 100
    .venv/bin/python bench/fit.py --specs models/synthetic_icb.yaml --samplers nutpie \
        --areas 100 300 1000 3000                  # the cost-per-cell curve
    .venv/bin/python bench/fit.py --samplers nutpie pymc --draws 500
    .venv/bin/python bench/fit.py --specs models/hypertension_england_pcn.yaml \
        --samplers nutpie pymc plain --draws 300   # and the model written plainly
    .venv/bin/python bench/fit.py --parallel 6 --timeout 600   # a machine with cores to spare
    .venv/bin/python bench/fit.py --specs models/synthetic_icb.yaml --samplers nutpie \
        --blas-threads 0 1                         # BLAS threads per chain, side by side
    .venv/bin/python bench/fit.py --specs models/synthetic_icb.yaml --samplers nutpie \
        --adaptation diag low_rank                 # nutpie's mass matrices, side by side
    .venv/bin/python bench/fit.py --specs models/synthetic_icb.yaml --samplers nutpie \
        --revisions 3fa49be HEAD                   # the library at two commits, side by side

Each (spec, sampler) runs in its own process so that peak memory is its own; with
`--parallel N` up to N of them run at once (each samples 2 chains on 2 cores, so use it
only where N x 2 cores are free), and `--timeout` stops a run that takes longer. Prints one
table: wall time end to end (build + compile + sampling), compile time where the sampler
exposes it, min bulk ESS over the gate's hyperparameters (and which one), ESS per
second of wall time, divergences, peak memory, gradients per draw in warm-up and after it,
and microseconds per gradient per cell (with several `--areas`, the curve across sizes).
The `plain` sampler is the spec's model as one would first write it (`bench/plain.py`:
the same priors and likelihood, every parameter sampled as itself, the area effects
sampled and centred) under PyMC's default NUTS, so the product's parametrisation can be
weighed against it; specs it cannot write out get a note. numpyro needs
`pip install -e ".[bench]"` (JAX, run on the CPU unless JAX_PLATFORMS says otherwise);
it is skipped with a note when missing. BLAS runs single-threaded inside each
chain, as gapmodel.fit samples; `--blas-threads 0 1` adds rows with the library's default
(a thread per core in every chain). `--adaptation diag low_rank` runs nutpie with each mass
matrix in place of the spec's own (the `adapt` column). `--revisions` runs the library
(gapmodel/) as it was at each git revision, from a temporary worktree (the `rev` column;
`work`: the working tree), with this script and the spec files as they are now. Machines
are noisy: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    ROOT,
    add_blas_option,
    add_revisions_option,
    checkouts,
    has_module,
    limit_blas,
    machine_line,
    min_ess,
    run_child,
    spec_file,
)

DEFAULT_SPECS = ("models/synthetic_icb.yaml", "models/hypertension_england_pcn.yaml")


def run_one(spec_path: str, sampler: str, draws: int, areas: int | None,
            data_dir: str | None, blas: int = 1, adaptation: str = "spec") -> dict:
    """Fit once in this process and measure it, with `blas` BLAS threads per chain (0: the
    library's default, a thread per core; 1: as gapmodel.fit samples) and nutpie's
    `adaptation` (diag, low_rank, or the spec's own)."""
    import pymc as pm

    from gapmodel.fit import monitored
    from gapmodel.model import build_model
    from gapmodel.sources import load_spec_data
    from gapmodel.spec import ModelSpec

    spec = ModelSpec.from_yaml(spec_file(spec_path))
    if areas is not None and spec.data.kind == "simulate":
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"areas": areas})})
    s = spec.sampler
    if adaptation != "spec":
        s = s.model_copy(update={"adaptation": adaptation})
    dataset, _ = load_spec_data(spec, data_dir)
    limits = limit_blas(blas)
    start = time.perf_counter()
    if sampler == "plain":
        from plain import Unsupported, plain_model

        try:
            model = plain_model(dataset, spec)
        except Unsupported as exc:
            return {"spec": spec.name, "sampler": sampler, "note": str(exc)}
    else:
        model, _ = build_model(dataset, spec)
    compile_s, chain_s = float("nan"), None
    if sampler == "nutpie":
        import nutpie

        t0 = time.perf_counter()
        compiled = nutpie.compile_pymc_model(model)
        compile_s = time.perf_counter() - t0
        kwargs = {"adaptation": s.adaptation} if s.adaptation != "diag" else {}
        t0 = time.perf_counter()
        idata = nutpie.sample(compiled, draws=draws, tune=draws, chains=s.chains,
                              cores=min(s.chains, 2), seed=s.seed,
                              target_accept=s.target_accept, progress_bar=False, **kwargs)
        chain_s = (time.perf_counter() - t0) * min(s.chains, 2)  # chains run in threads
    else:
        if sampler in ("pymc", "plain"):
            t0 = time.perf_counter()
            model.logp_dlogp_function()
            compile_s = time.perf_counter() - t0
        with model:
            idata = pm.sample(draws=draws, tune=draws, chains=s.chains,
                              cores=min(s.chains, 2),
                              nuts_sampler="pymc" if sampler == "plain" else sampler,
                              target_accept=s.target_accept, random_seed=s.seed,
                              progressbar=False, compute_convergence_checks=False,
                              discard_tuned_samples=False)
    wall = time.perf_counter() - start
    limits.restore_original_limits()
    names = monitored(idata)
    least, worst = min_ess(idata.posterior.to_dataset(), names)
    stats = idata.sample_stats
    divergences = int(stats["diverging"].sum()) if "diverging" in stats else -1
    cells = len(dataset.cells)
    warmup = idata.get("warmup_sample_stats")
    steps = {"grads_warmup": float(warmup["n_steps"].mean()) if warmup is not None
             and "n_steps" in warmup else float("nan"),
             "grads_draw": float(stats["n_steps"].mean()) if "n_steps" in stats
             else float("nan")}
    return {**steps, "spec": spec.name, "sampler": sampler, "blas": blas,
            "adapt": s.adaptation if sampler == "nutpie" else "-", "cells": cells,
            "wall_s": wall, "compile_s": compile_s, "min_ess": least, "worst": worst,
            "ess_per_s": least / wall, "divergences": divergences,
            "us_per_grad_cell": _gradient_cost(idata, sampler, chain_s, cells),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _gradient_cost(idata, sampler: str, chain_s: float | None, cells: int) -> float:
    """Microseconds of chain time per gradient evaluation per cell, warm-up included (nutpie:
    the sampling call's wall time x chains; PyMC: each iteration's own time). NaN where the
    sampler does not report its steps."""
    stats, warmup = idata.get("sample_stats"), idata.get("warmup_sample_stats")
    if warmup is None or "n_steps" not in stats:
        return float("nan")
    if sampler in ("pymc", "plain"):
        chain_s = float(stats["perf_counter_diff"].sum() + warmup["perf_counter_diff"].sum())
    grads = int(stats["n_steps"].sum() + warmup["n_steps"].sum())
    return 1e6 * chain_s / grads / cells if chain_s else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    parser.add_argument("--samplers", nargs="+", default=["nutpie", "pymc", "numpyro"])
    parser.add_argument("--draws", type=int, default=1000, help="tune and draws per chain")
    parser.add_argument("--areas", nargs="+", type=int, default=[None],
                        help="resize simulated specs, a row for each size")
    parser.add_argument("--data", default=os.environ.get("GAPMODEL_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    add_blas_option(parser)
    parser.add_argument("--adaptation", nargs="+", default=["spec"],
                        choices=("spec", "diag", "low_rank"),
                        help="nutpie's mass matrix, a row for each (spec: the spec's own)")
    add_revisions_option(parser)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.specs[0], args.samplers[0], args.draws, args.areas[0],
                                 args.data, args.blas_threads[0], args.adaptation[0])))
        return
    print(machine_line(args.parallel, args.draws), flush=True)
    runs = [(spec, areas, sampler, blas, adaptation, rev) for spec in args.specs
            for areas in args.areas for sampler in args.samplers for blas in args.blas_threads
            for adaptation in (args.adaptation if sampler == "nutpie" else ["spec"])
            for rev in args.revisions]
    with checkouts(args.revisions) as trees, ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda run: _run(*run, args, trees[run[-1]]), runs))
    print()
    print(report(rows))


def report(rows: list[dict]) -> str:
    """The table, then microseconds per gradient per cell across sizes (flat is the aim)."""
    lines = [f"{'spec':28} {'rev':>8} {'sampler':8} {'blas':>4} {'adapt':>8} {'cells':>7} "
             f"{'wall s':>8} {'compile s':>9} {'min ESS':>8} {'ESS/s':>7} {'div':>4} "
             f"{'peak MB':>8} {'grads/draw warm-up, after':>25} {'us/grad/cell':>12}  worst"
             ] + [_format(row) for row in rows]
    fitted = [r for r in rows if "note" not in r]
    if len({r["cells"] for r in fitted}) > 1:
        lines += ["", "cost per cell (us per gradient evaluation per cell) by cells:"]
        keys = ("spec", "rev", "sampler", "blas", "adapt")
        for key in dict.fromkeys(tuple(r[k] for k in keys) for r in fitted):
            curve = [r for r in fitted if tuple(r[k] for k in keys) == key]
            lines.append(f"  {key[0]:28} {key[1]:>8} {key[2]:8} {key[3] or 'all':>4} "
                         f"{key[4]:>8}  " + "  ".join(
                f"{r['cells']:,}: {r['us_per_grad_cell']:.3f}" for r in curve))
    return "\n".join(lines)


def _run(spec: str, areas: int | None, sampler: str, blas: int, adaptation: str,
         rev: str | None, args: argparse.Namespace, tree: Path) -> dict:
    """One (spec, size, sampler, BLAS threads, adaptation, revision) fit in a fresh
    process, importing the library from `tree`; a row of the table."""
    label = {"spec": Path(spec).stem, "sampler": sampler, "blas": blas,
             "adapt": adaptation if sampler == "nutpie" else "-", "rev": rev or "work"}
    if sampler == "numpyro" and not has_module("numpyro"):
        row = {**label,
               "note": "numpyro not installed (pip install -e '.[bench]')"}
    else:
        cmd = [sys.executable, __file__, "--one", "--specs", spec, "--samplers", sampler,
               "--draws", str(args.draws), "--data", args.data, "--blas-threads", str(blas),
               "--adaptation", adaptation]
        if areas:
            cmd += ["--areas", str(areas)]
        env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(tree),
                                                            os.environ.get("PYTHONPATH")]))}
        row = {**run_child(cmd, label, args.timeout, env), "rev": label["rev"]}
    print("done:", _format(row), flush=True)
    return row


def _format(row: dict) -> str:
    head = (f"{row['spec']:28} {row.get('rev', 'work'):>8} {row['sampler']:8} "
            f"{row.get('blas', 1) or 'all':>4} {row.get('adapt', '-'):>8}")
    if "note" in row:
        return f"{head} {row['note']}"
    return (f"{head} {row['cells']:7d} {row['wall_s']:8.1f} "
            f"{row['compile_s']:9.1f} {row['min_ess']:8.0f} {row['ess_per_s']:7.2f} "
            f"{row['divergences']:4d} {row['peak_mb']:8.0f} "
            f"{row.get('grads_warmup', float('nan')):14.1f}, "
            f"{row.get('grads_draw', float('nan')):9.1f} "
            f"{row.get('us_per_grad_cell', float('nan')):12.3f}  {row['worst']}")


if __name__ == "__main__":
    main()
