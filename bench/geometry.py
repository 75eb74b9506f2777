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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="models/synthetic_icb.yaml")
    parser.add_argument("--areas", type=int, default=100)
    parser.add_argument("--draws", type=int, default=600, help="tune and draws per chain")
    parser.add_argument("--data", default=None)
    parser.add_argument("--seed", type=int, default=None, help="default: the spec's")
    args = parser.parse_args()
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
    compiled = nutpie.compile_pymc_model(model)
    s = spec.sampler
    start = time.perf_counter()
    with limit_blas(1):
        kwargs = {"adaptation": s.adaptation} if s.adaptation != "diag" else {}
        idata = nutpie.sample(compiled, draws=args.draws, tune=args.draws, chains=2, cores=2,
                              seed=s.seed if args.seed is None else args.seed,
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


if __name__ == "__main__":
    main()
