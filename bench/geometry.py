"""Where the posterior is hard to sample: its narrowest and widest directions.

    .venv/bin/python bench/geometry.py                       # synthetic scenario, 100 areas
    .venv/bin/python bench/geometry.py --areas 300 --draws 600
    PYTHONPATH=/path/to/worktree .venv/bin/python bench/geometry.py   # another revision

Fits the spec (nutpie, 2 chains x (draws + draws), the spec's mass matrix, one BLAS thread
per chain), keeps the draws of every sampled coordinate, scales each by its posterior sd
(what a diagonal mass matrix sees) and prints the eigenvalues of their correlation matrix:
the smallest are the narrow diagonals that limit the step size, the largest the long ones
that need many steps to cross; for each, the coordinates that make it up. A well-sampled
posterior has them near 1. Also prints the gradients per draw in warm-up and after, each
chain's final step size and the divergences. Needs more draws than coordinates (600 x 2
for 100 areas); the smallest eigenvalues of fewer are noise.

`--start pathfinder` samples as a first fit does instead (Pathfinder, then PyMC's NUTS
adapting a dense block over the small variables and a diagonal over the rest; tune and
draws `--draws` each). `--hessian N` then needs no more draws than coordinates: at N
posterior draws it prints the spectrum of the log density's Hessian preconditioned by the
draws' covariance over the dense block and their variances elsewhere (what such a run's
matrix converges to when adapted from the draws alone), by the diagonal alone and, with
N of 2 or more, by a dense mass matrix from the Hessian at another of those draws (how
far a fixed curvature carries).
Under a Gaussian, NUTS's step size scales as 1 / sqrt(largest eigenvalue) and the
trajectory it needs as 1 / sqrt(smallest), so sqrt(largest / smallest) is about the
gradients a draw that the geometry asks for; the extreme directions name the coordinates
that make them. It also prints, per chain, the gradients a draw in each tuning window
and after tuning, and the step size: where a first fit's tuning spends its time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import ROOT, limit_blas


def coordinates(idata, model) -> tuple[np.ndarray, list[str]]:
    """Draws x coordinates of every sampled (unconstrained) variable, with labels."""
    unconstrained = idata.unconstrained_posterior.to_dataset()
    posterior = idata.posterior.to_dataset()
    columns, labels = [], []
    for rv in model.free_RVs:
        name = model.rvs_to_values[rv].name
        values = (unconstrained[name] if name in unconstrained else posterior[name]).values
        values = values.reshape(values.shape[0] * values.shape[1], -1)
        columns.append(values)
        labels += [f"{name}[{j}]" for j in range(values.shape[1])]
    return np.column_stack(columns), labels


def directions(draws: np.ndarray, labels: list[str], count: int = 4, terms: int = 6
               ) -> list[str]:
    """The `count` smallest and largest eigenvalues of the draws' correlation matrix, each
    with its `terms` largest loadings."""
    keep = draws.std(axis=0) > 0
    values, vectors = np.linalg.eigh(np.corrcoef(draws[:, keep].T))
    names = np.array(labels)[keep]
    lines = []
    for k in [*range(count), *range(len(values) - count, len(values))]:
        top = np.argsort(-np.abs(vectors[:, k]))[:terms]
        parts = ", ".join(f"{names[i]} {vectors[i, k]:+.2f}" for i in top)
        lines.append(f"{values[k]:9.4f}  {parts}")
    return lines


def value_draws(idata, model) -> tuple[np.ndarray, list[str], list[int]]:
    """Draws x coordinates in the sampler's own space (the value variables, raveled in
    the model's order), with labels and each variable's size."""
    posterior = idata.posterior.to_dataset()
    columns, labels, sizes = [], [], []
    for value in model.value_vars:
        values = posterior[value.name].values
        values = values.reshape(values.shape[0] * values.shape[1], -1)
        columns.append(values)
        labels += [f"{value.name}[{j}]" for j in range(values.shape[1])]
        sizes.append(values.shape[1])
    return np.column_stack(columns), labels, sizes


def preconditioners(draws: np.ndarray, sizes: list[int]) -> dict[str, np.ndarray]:
    """Square roots S (S S' the mass matrix's covariance) of the block-diagonal matrix a
    first fit adapts towards, and of the diagonal alone."""
    from gapmodel.warmstart import _dense_positions

    sd = draws.std(axis=0)
    block = np.diag(sd)
    dense = _dense_positions(sizes)
    if len(dense):
        block[np.ix_(dense, dense)] = np.linalg.cholesky(np.cov(draws[:, dense].T))
    return {"block + diagonal": block, "diagonal": np.diag(sd)}


def spectrum(gradient, point: np.ndarray, root: np.ndarray, step: float = 1e-4
             ) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of S' H S at `point` (H the negative Hessian of the
    log density), by central differences of the gradient along S's columns."""
    columns = [(gradient(point - step * root[:, j]) - gradient(point + step * root[:, j]))
               / (2 * step) for j in range(root.shape[1])]
    scaled = root.T @ np.column_stack(columns)
    return np.linalg.eigh((scaled + scaled.T) / 2)


def spectrum_lines(values: np.ndarray, vectors: np.ndarray, root: np.ndarray,
                   labels: list[str], count: int = 3, terms: int = 5) -> list[str]:
    """The spread (sqrt of the largest over the smallest positive eigenvalue), then the
    `count` largest and smallest eigenvalues, each with the coordinates that load most on
    its direction (mapped back through S)."""
    positive = values[values > 0]
    lines = [f"  largest {values[-1]:.3g}, smallest {values[0]:.3g}, sqrt(largest / "
             f"smallest positive) {np.sqrt(values[-1] / positive[0]):.1f}, "
             f"{int((values <= 0).sum())} not positive (the density not log-concave there)"]
    for k in [*range(len(values) - 1, len(values) - 1 - count, -1), *range(count)]:
        direction = root @ vectors[:, k]
        direction = direction / np.abs(direction).max()
        top = np.argsort(-np.abs(direction))[:terms]
        parts = ", ".join(f"{labels[i]} {direction[i]:+.2f}" for i in top)
        lines.append(f"  {values[k]:10.4g}  {parts}")
    return lines


def first_fit_draws(model, spec, draws: int, seed: int, warm=None):
    """2 chains x (draws + draws) as a first fit samples them (Pathfinder's start, PyMC's
    NUTS adapting its covariance), keeping the value variables' draws; and the compiled
    log density and gradient. `warm`: Pathfinder's start, where already found."""
    import pymc as pm

    from gapmodel.warmstart import pathfinder_start

    warm = warm or pathfinder_start(model, 2, seed, draws)
    s = spec.sampler  # the warm run's target, as gapmodel.fit.sample takes it
    accept = (s.warm_start.target_accept if s.warm_start else None) or s.target_accept
    with model, limit_blas(1):
        step = warm.nuts(model, accept)
        idata = pm.sample(draws=draws, tune=draws, step=step, chains=2, cores=2,
                          random_seed=seed, initvals=warm.initvals(2), progressbar=False,
                          compute_convergence_checks=False, discard_tuned_samples=False,
                          idata_kwargs={"include_transformed": True})
    return idata, warm.logp_dlogp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="models/synthetic_icb.yaml")
    parser.add_argument("--areas", type=int, default=100)
    parser.add_argument("--draws", type=int, default=600, help="tune and draws per chain")
    parser.add_argument("--data", default=None)
    parser.add_argument("--seed", type=int, default=None, help="default: the spec's")
    parser.add_argument("--start", choices=["nutpie", "pathfinder"], default="nutpie",
                        help="cold nutpie with the spec's mass matrix, or a first fit's "
                             "Pathfinder start and PyMC's NUTS")
    parser.add_argument("--low-rank-cutoff", nargs="+", type=float, default=None,
                        help="--start pathfinder: a run from the same start for each "
                             "cutoff of the adapted matrix's low-rank term (0: no term; "
                             "default: the library's)")
    parser.add_argument("--hessian", type=int, default=0,
                        help="the preconditioned Hessian's spectrum at this many draws "
                             "(--start pathfinder)")
    args = parser.parse_args()
    if args.hessian and args.start != "pathfinder":
        parser.error("--hessian needs --start pathfinder")
    import nutpie

    import gapmodel
    from gapmodel.model import build_model
    from gapmodel.sources import load_spec_data
    from gapmodel.spec import ModelSpec

    spec = ModelSpec.from_yaml(ROOT / args.spec)
    if spec.data.kind == "simulate":
        spec = spec.model_copy(update={"data": spec.data.model_copy(
            update={"areas": args.areas})})
    dataset, _ = load_spec_data(spec, args.data)
    model, _ = build_model(dataset, spec)
    s = spec.sampler
    seed = s.seed if args.seed is None else args.seed
    if args.start == "pathfinder":
        from dataclasses import replace

        from gapmodel.warmstart import LOW_RANK_CUTOFF, pathfinder_start

        warm = pathfinder_start(model, 2, seed, args.draws)
        for cutoff in args.low_rank_cutoff or [LOW_RANK_CUTOFF]:
            start = time.perf_counter()
            run = replace(warm, low_rank_cutoff=cutoff or None)
            idata, logp_dlogp = first_fit_draws(model, spec, args.draws, seed, run)
            term = f", low-rank cutoff {cutoff:g}" if cutoff else ", no low-rank term"
            report_first_fit(idata, model, logp_dlogp, args, time.perf_counter() - start,
                             f"{spec.name}: {len(dataset.cells):,} cells{term}")
        return
    compiled = nutpie.compile_pymc_model(model)
    start = time.perf_counter()
    with limit_blas(1):
        kwargs = {"adaptation": s.adaptation} if s.adaptation != "diag" else {}
        idata = nutpie.sample(compiled, draws=args.draws, tune=args.draws, chains=2, cores=2,
                              seed=seed,
                              target_accept=s.target_accept,
                              progress_bar=False, store_unconstrained=True, **kwargs)
    seconds = time.perf_counter() - start
    draws, labels = coordinates(idata, model)
    warmup, stats = idata.warmup_sample_stats, idata.sample_stats
    print(f"library: {gapmodel.__file__}")
    print(f"{spec.name}: {len(dataset.cells):,} cells, {draws.shape[1]} coordinates, "
          f"2 x ({args.draws} + {args.draws}) in {seconds:.0f} s")
    print(f"gradients per draw: warm-up {float(warmup['n_steps'].mean()):.1f}, after "
          f"{float(stats['n_steps'].mean()):.1f}; final step sizes "
          f"{', '.join(f'{v:.3f}' for v in stats['step_size'].values[:, -1])}; "
          f"divergences {int(stats['diverging'].sum())}")
    if draws.shape[0] <= draws.shape[1]:
        print(f"note: {draws.shape[0]} draws for {draws.shape[1]} coordinates: the smallest "
              "eigenvalues are noise")
    print("eigenvalues of the scaled posterior correlation (smallest, then largest):")
    print("\n".join(directions(draws, labels)))


def report_first_fit(idata, model, logp_dlogp, args, seconds: float, title: str) -> None:
    """Print what `--start pathfinder` found: the run, then the correlation's eigenvalues
    where the draws outnumber the coordinates, and the preconditioned Hessian's spectrum
    at `--hessian` draws."""
    import gapmodel

    draws, labels, sizes = value_draws(idata, model)
    stats = idata.sample_stats
    print(f"library: {gapmodel.__file__}")
    print(f"{title}, {draws.shape[1]} coordinates, Pathfinder then PyMC's NUTS, "
          f"2 x ({args.draws} + {args.draws}) in {seconds:.0f} s")
    print(f"gradients per draw after warm-up {float(stats['n_steps'].mean()):.1f}; mean "
          f"step sizes {', '.join(f'{v:.3f}' for v in stats['step_size'].values.mean(1))}; "
          f"divergences {int(stats['diverging'].sum())}")
    print("\n".join(tuning_lines(idata.warmup_sample_stats, stats, args.draws)))
    if draws.shape[0] > draws.shape[1]:
        print("eigenvalues of the scaled posterior correlation (smallest, then largest):")
        print("\n".join(directions(draws, labels)))
    logp_dlogp.set_extra_values({})

    def gradient(point: np.ndarray) -> np.ndarray:
        return np.asarray(logp_dlogp(point)[1])

    roots = preconditioners(draws, sizes)
    rng = np.random.default_rng(0)
    rows = rng.choice(draws.shape[0], size=args.hessian, replace=False)
    for k, row in enumerate(rows):
        dense = {}
        if len(rows) > 1:  # a dense mass matrix from the curvature at another draw
            other = rows[(k + 1) % len(rows)]
            dense = {f"Hessian at draw {other}": hessian_root(gradient, draws[other])}
        for name, root in (roots | dense).items():
            values, vectors = spectrum(gradient, draws[row], root)
            print(f"preconditioned Hessian at draw {row}, {name}:")
            print("\n".join(spectrum_lines(values, vectors, root, labels)))


def tuning_lines(warmup, stats, tune: int) -> list[str]:
    """Per chain: the gradients a draw in each of the adaptation windows (the settling
    steps and the final fast ones as their own spans) and after tuning, the step size it
    settled on, the wall time a gradient after tuning (the step's, mass matrix included)
    and the low-rank term's widest and narrowest variance where the matrix has one: where
    a chain's tuning spends its time."""
    from gapmodel.warmstart import adaptation_windows

    windows = adaptation_windows(tune)
    spans = [(0, windows[0][0])] * (windows[0][0] > 0) + windows + [(windows[-1][1], tune)]
    lines = ["gradients a draw per chain, by tuning window (steps): "
             + ", ".join(f"{a}-{b}" for a, b in spans if b > a) + ", then after; step size"]
    steps = warmup["n_steps"].values
    for c in range(steps.shape[0]):
        means = [f"{steps[c, a:b].mean():.0f}" for a, b in spans if b > a]
        lines.append(f"  chain {c}: {' / '.join(means)}; after "
                     f"{stats['n_steps'].values[c].mean():.0f}; step "
                     f"{stats['step_size'].values[c].mean():.3f}{_per_gradient(stats, c)}"
                     f"{_low_rank(stats, c)}")
    return lines


def _per_gradient(stats, chain: int) -> str:
    """Milliseconds of the chain's wall time a gradient after tuning, where recorded."""
    if "perf_counter_diff" not in stats:
        return ""
    seconds = float(stats["perf_counter_diff"].values[chain].sum())
    return f"; {1000 * seconds / float(stats['n_steps'].values[chain].sum()):.2f} ms a gradient"


def _low_rank(stats, chain: int) -> str:
    """The low-rank term's widest and narrowest variance after tuning, where it has one."""
    if "largest_eigval" not in stats or np.isnan(stats["largest_eigval"].values[chain, -1]):
        return ""
    return (f"; low rank {stats['largest_eigval'].values[chain, -1]:.3g} to "
            f"{stats['smallest_eigval'].values[chain, -1]:.3g}")


def hessian_root(gradient, point: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """S with S S' the inverse of the negative Hessian at `point`, its eigenvalues held
    at least `floor` times their median (where the density is not log-concave, or
    nearly flat)."""
    values, vectors = spectrum(gradient, point, np.eye(len(point)))
    values = np.maximum(values, floor * np.median(values))
    return vectors / np.sqrt(values)


if __name__ == "__main__":
    main()
