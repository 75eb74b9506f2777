"""The Laplace collapse's Newton steps: cost and accuracy, side by side.

    .venv/bin/python bench/laplace.py                  # hypertension by PCN, 40 draws
    .venv/bin/python bench/laplace.py --spec models/dementia_england_pcn.yaml
    .venv/bin/python bench/laplace.py --steps 10 6 3 2

Builds the spec's model once per number of Newton steps (`detection.area.newton_steps`,
which only a collapse left as a graph takes: censored counts, completeness weights or the
beta-binomial; the compiled collapse of exact area totals steps to convergence, so its rows
differ by noise alone) and evaluates the log density and its gradient at draws of the
spec's active version in the registry or, without one, of Pathfinder's approximation (a
first fit's start), in one process, one BLAS thread. Prints per number of steps:
milliseconds per log density + gradient (median over the draws of each draw's best of 5
calls), and the largest differences from the reference (the first row, 10 steps unless
`--steps` says otherwise)
over the draws: in the log density, absolute, and in the gradient, relative
(|g - g_ref| / |g_ref|).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from common import ROOT, limit_blas, machine_line

STEPS = (10, 6, 4, 3)


def _model(dataset, spec, steps: int):
    from gapmodel.model import build_model

    area = spec.detection.area.model_copy(update={"newton_steps": steps})
    detection = spec.detection.model_copy(update={"area": area})
    return build_model(dataset, spec.model_copy(update={"detection": detection}))[0]


def _points(model, posterior, draws: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`draws` posterior draws as points of the model's value variables."""
    from gapmodel.warmstart import unconstrained_draws

    rng = np.random.default_rng(seed)
    flat = unconstrained_draws(model, posterior)
    shapes = {name: value.shape for name, value in model.initial_point().items()}
    picks = rng.choice(posterior.sizes["chain"] * posterior.sizes["draw"], size=draws,
                       replace=False)
    return [{name: values[pick].reshape(shapes[name]) for name, values in flat.items()}
            for pick in picks]


def _pathfinder_points(model, draws: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`draws` draws of Pathfinder's approximation (a first fit's start), where the
    registry holds no version of the spec."""
    from pymc.blocking import DictToArrayBijection, RaveledVars

    from gapmodel.warmstart import pathfinder_approximation

    rng = np.random.default_rng(seed)
    _, approx, layout = pathfinder_approximation(model, seed, rng)
    size = sum(size for _, _, size, _ in layout)
    return [DictToArrayBijection.rmap(RaveledVars(x, layout))
            for x in approx.draw(rng.standard_normal((draws, size)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="models/hypertension_england_pcn.yaml")
    parser.add_argument("--data", default=os.environ.get("GAPMODEL_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--registry", default=str(ROOT / "models" / "registry"))
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS),
                        help="Newton steps a row; the first row is the reference")
    args = parser.parse_args()
    from gapmodel.registry import Registry, RegistryError
    from gapmodel.sources import load_spec_data
    from gapmodel.spec import ModelSpec

    print(machine_line(1, args.draws), flush=True)
    limit_blas(1)
    spec = ModelSpec.from_yaml(ROOT / args.spec)
    dataset, _ = load_spec_data(spec, args.data)
    try:
        version = Registry(args.registry).active(spec.name)
    except RegistryError:
        version = None
    rows, reference, points = [], None, None
    for steps in args.steps:
        label = f"{steps} Newton steps" + (" (reference)" if reference is None else "")
        model = _model(dataset, spec, steps)
        if points is None:
            points = (_points(model, version.posterior()["posterior"], args.draws)
                      if version is not None else _pathfinder_points(model, args.draws))
        t0 = time.perf_counter()
        function = model.logp_dlogp_function(ravel_inputs=True)
        function.set_extra_values({})
        compile_s = time.perf_counter() - t0
        flat = [np.concatenate([np.ravel(p[v.name]) for v in function._grad_vars])
                for p in points]
        results, times = [], []
        for x in flat:
            best = np.inf
            for _ in range(5):
                t = time.perf_counter()
                value, grad = function(x)
                best = min(best, time.perf_counter() - t)
            results.append((float(value), np.array(grad)))
            times.append(best)
        if reference is None:
            reference = results
        logp_err = max(abs(r[0] - ref[0]) for r, ref in zip(results, reference, strict=True))
        grad_err = max(np.linalg.norm(r[1] - ref[1]) / np.linalg.norm(ref[1])
                       for r, ref in zip(results, reference, strict=True))
        rows.append((label, 1e3 * float(np.median(times)), compile_s, logp_err, grad_err))
        print(f"done: {label}", flush=True)
    source = f"version {version.id}'s posterior" if version is not None else "Pathfinder's"
    print(f"\n{spec.name}, {args.draws} draws of {source}\n")
    print(f"{'collapse':36} {'ms per logp+grad':>16} {'compile s':>9} {'max |logp err|':>14} "
          f"{'max rel grad err':>16}")
    for label, ms, compile_s, logp_err, grad_err in rows:
        print(f"{label:36} {ms:16.2f} {compile_s:9.1f} {logp_err:14.2e} {grad_err:16.2e}")


if __name__ == "__main__":
    main()
