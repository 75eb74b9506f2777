"""A refit from cold against one warm-started from the active version, side by side.

    .venv/bin/python bench/warmstart.py                    # hypertension by PCN
    .venv/bin/python bench/warmstart.py --specs models/dementia_england_pcn.yaml
    .venv/bin/python bench/warmstart.py --warm 300 600 300 800   # (tune, draws) pairs
    .venv/bin/python bench/warmstart.py --pilot            # and a first fit through a pilot
    .venv/bin/python bench/warmstart.py --no-cold --pilot 300 200 200 100   # pilot lengths
    .venv/bin/python bench/warmstart.py --no-cold --revisions 8a90125 HEAD   # two commits
    .venv/bin/python bench/warmstart.py --no-cold --pilot --pilot-maxdepth 10 5 \
        --seeds 1 2 3                                  # the pilot's tree depth, 3 seeds
    .venv/bin/python bench/warmstart.py --no-cold --pilot --pilot-method nuts pathfinder \
        --fresh-cache --seeds 1 2 3                    # a short run against Pathfinder
    .venv/bin/python bench/warmstart.py --specs models/synthetic_icb.yaml --areas 1000 \
        --no-cold --pilot --pilot-method pathfinder    # the synthetic scenario, 1,000 areas
    .venv/bin/python bench/warmstart.py --no-cold --pilot --new-cache \
        --scales 1 1.05                                # new data, its graph's ops compiled

Samples each spec twice or more, each in a fresh process, one after the other, on the same
data as its active version in the registry: cold (the spec's sampler and lengths: nutpie,
its mass matrix tuned afresh) and warm (`gapmodel.warmstart`: PyMC's NUTS under the active
posterior's mass matrix, from its last draws, tuning only the step size) at the spec's
warm-start lengths or each `--warm` pair; with `--pilot`, also as a first fit would with
no earlier version: the spec's pilot (a short cold run; 300 + 200 where the spec has
none) or one per (tune, draws) pair given, then warm from its draws at each warm row's
lengths. Prints the wall time from the model's build to the last draw (compilation
included), min bulk ESS and max R-hat over the gate's hyperparameters and the national
gap (and the worst one; the gap's draws and the deterministics' come from the derive
step, after the wall time: `derive s`, compilation included),
ESS per second, gradients per draw after warm-up, the mean step size, divergences and
whether the gate's ESS, R-hat and divergence checks pass, and the part of the wall time
spent before sampling (the pilot, Pathfinder, or reading the active version).
`--revisions` runs each row with the library as it was at each git revision (the `rev`
column); `--pilot-maxdepth` gives the pilot rows nutpie's maximum tree depth (a row per
value), `--pilot-method` their method (a row per value: `nuts`, a short run, 300 + 200
unless the spec's pilot is one, or `pathfinder`, whose warm run tunes 400 steps unless the
spec's pilot is one), `--seeds` repeats every row with each seed in place of the spec's,
`--areas` every row at each size of a simulated spec's scenario, `--warm-maxdepth` the
warm rows PyMC NUTS's maximum tree depth (a row per value), `--scales` every row with each
population multiplied by each factor (new data for the same layout; the `data` column),
`--fresh-cache` gives each row empty PyTensor and numba caches, as on a fresh install,
`--new-cache` one pair of caches for all rows, empty when the first starts (with
`--scales 1 1.05` the second row is new data on a machine that has compiled the spec
before), and `--stand-in` each row caches that `gapmodel compile SPEC --stand-in` filled
before it starts, as in a new image built with them (the compilation's seconds follow the
row, outside its wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

from common import (
    ROOT,
    add_revisions_option,
    checkouts,
    limit_blas,
    machine_line,
    min_ess,
    run_at,
    scaled_populations,
    spec_file,
)

#: a pilot's tune where its method is not the spec's pilot's: the NUTS pilot's warm-up,
#: or the warm run's (adapting its mass matrix) after Pathfinder
PILOT_TUNE = {"nuts": 300, "pathfinder": 400}


def run_one(spec_path: str, data_dir: str, registry: str, warm: tuple[int, int] | None,
            target_accept: float | None = None, pilot: tuple[int, ...] | None = None,
            maxdepth: int | None = None, seed: int | None = None,
            method: str | None = None, areas: int | None = None,
            warm_depth: int | None = None, scale: float = 1.0) -> dict:
    """One row: cold (`warm` None), warm from the active version (`warm` its lengths), or
    a first fit through a pilot (`pilot`: () for the spec's, or its (tune, draws); `warm`
    the warm lengths)."""
    import arviz as az

    from gapmodel import fit as fit_module
    from gapmodel.fit import _derive_all, _warm_start_or_pilot, monitored, sample
    from gapmodel.model import build_model
    from gapmodel.registry import Registry
    from gapmodel.sources import load_spec_data
    from gapmodel.spec import ModelSpec, PilotSettings, WarmStartSettings
    from gapmodel.warmstart import warm_start

    limit_blas(1)
    spec = ModelSpec.from_yaml(spec_file(spec_path))
    if areas and spec.data.kind == "simulate":
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"areas": areas})})
    s = spec.sampler
    if seed is not None:
        s = s.model_copy(update={"seed": seed})
    if warm:  # the pair's lengths; the spec's warm target_accept unless one is given
        base = s.warm_start or WarmStartSettings()
        settings = WarmStartSettings(tune=warm[0], draws=warm[1],
                                     target_accept=target_accept or base.target_accept,
                                     maxdepth=warm_depth or base.maxdepth)
        pilot_settings = None
        if pilot is not None:
            pilot_settings = PilotSettings(tune=pilot[0], draws=pilot[1]) if pilot else \
                s.pilot or PilotSettings()
            if method and method != pilot_settings.method:
                pilot_settings = PilotSettings(method=method, tune=PILOT_TUNE[method]) \
                    if not pilot else pilot_settings.model_copy(update={"method": method})
            if maxdepth:
                pilot_settings = pilot_settings.model_copy(update={"maxdepth": maxdepth})
        s = s.model_copy(update={"warm_start": settings, "pilot": pilot_settings})
        accept = settings.target_accept or s.target_accept
    else:
        s = s.model_copy(update={"target_accept": target_accept or s.target_accept})
        accept = s.target_accept
    spec = spec.model_copy(update={"sampler": s})
    dataset = scaled_populations(load_spec_data(spec, data_dir)[0], scale)
    start = time.perf_counter()
    model, data = build_model(dataset, spec)
    state = None
    if pilot is not None:
        state, _ = _warm_start_or_pilot(model, spec, None, progress=False)
    elif warm:
        version = Registry(registry).active(spec.name)
        state = warm_start(model, version.posterior()["posterior"].to_dataset(), version.id)
    start_s = time.perf_counter() - start
    idata = sample(model, spec, progress=False, warm=state)
    wall = time.perf_counter() - start
    # the gate's ESS check covers the national gap too, and the deterministics among its
    # hyperparameters: both come from the derive step
    derived = _derive_all(model, data, idata.posterior.to_dataset(),
                          spec.derived_draws, s.seed)
    derive_s = time.perf_counter() - start - wall
    total = derived[0]
    if len(derived) > 2:  # since 1519633 (a `--revisions` row may be older)
        idata = fit_module.with_deterministics(idata, derived[2])
    names = monitored(idata)
    posterior = idata.posterior.to_dataset()
    gap = posterior[[]].assign(total_undiagnosed=(("chain", "draw"), total))
    least, worst = min(min_ess(posterior, names), min_ess(gap, ["total_undiagnosed"]))
    rhat = az.rhat(posterior[names])
    stats = idata.sample_stats
    tune, draws = (warm if warm else (s.tune, s.draws))
    divergences = int(stats["diverging"].sum())
    max_rhat = float(max([float(rhat[n].max()) for n in names]
                         + [float(az.rhat(gap)["total_undiagnosed"])]))
    p = spec.sampler.pilot
    start_label = f"pilot {p.tune}+{p.draws}" if pilot is not None and p else \
        "warm" if warm else "cold"
    if pilot is not None and p and p.method == "pathfinder":
        start_label, tune = "pathfinder", p.tune
    if pilot is not None and p and p.maxdepth:
        start_label += f" d{p.maxdepth}"
    if warm and settings.maxdepth:
        start_label += f" max {settings.maxdepth}"
    return {"spec": spec.name, "areas": areas, "scale": scale, "start": start_label,
            "seed": s.seed,
            "sampler": "pymc" if warm else s.name, "tune": tune, "draws": draws,
            "accept": accept,
            "wall_s": wall, "start_s": start_s, "derive_s": derive_s, "min_ess": least,
            "worst": worst,
            "ess_per_s": least / wall,
            "max_rhat": max_rhat, "grads_draw": float(stats["n_steps"].mean()),
            "step": float(stats["step_size"].mean()), "divergences": divergences,
            "gate": least >= spec.gate.ess and max_rhat <= spec.gate.rhat
            and divergences <= spec.gate.divergences}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=["models/hypertension_england_pcn.yaml"])
    parser.add_argument("--warm", nargs="+", type=int, default=None,
                        help="(tune, draws) pairs of warm-started rows (default: the spec's)")
    parser.add_argument("--no-cold", action="store_true", help="only the warm rows")
    parser.add_argument("--pilot", nargs="*", type=int, default=None,
                        help="rows for a first fit: the spec's pilot (a short cold run), or "
                             "one per (tune, draws) pair given, then warm from its draws "
                             "at each warm row's lengths")
    parser.add_argument("--target-accept", type=float, default=None,
                        help="in place of the spec's (cold rows: the sampler's; warm rows: "
                             "the warm start's)")
    parser.add_argument("--data", default=os.environ.get("GAPMODEL_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--registry", default=str(ROOT / "models" / "registry"))
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument("--pilot-maxdepth", nargs="+", type=int, default=[0],
                        help="nutpie's maximum tree depth in the pilot, a row per value "
                             "(0: the spec's)")
    parser.add_argument("--warm-maxdepth", nargs="+", type=int, default=[0],
                        help="PyMC NUTS's maximum tree depth in the warm run (refits, and a "
                             "first fit's run after its pilot), a row per value (0: the "
                             "spec's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="repeat every row with each seed (0: the spec's)")
    parser.add_argument("--pilot-method", nargs="+", default=[""],
                        choices=["", "nuts", "pathfinder"],
                        help="the pilot rows' method, a row per value (default: the spec's)")
    parser.add_argument("--areas", nargs="+", type=int, default=[0],
                        help="a simulated spec's areas, a row per value (0: the spec's)")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0],
                        help="every population times each factor, a row per value: new "
                             "data for the same layout")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--fresh-cache", action="store_true",
                       help="each row compiles into empty PyTensor and numba caches")
    cache.add_argument("--new-cache", action="store_true",
                       help="the rows share PyTensor and numba caches, empty when the first "
                            "row starts")
    cache.add_argument("--stand-in", action="store_true",
                       help="each row's caches filled by `gapmodel compile SPEC --stand-in` "
                            "before it starts, as in a new image")
    add_revisions_option(parser)
    parser.add_argument("--one", nargs="*", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        warm = tuple(args.one) if args.one else None
        pilot = tuple(args.pilot) if args.pilot is not None else None
        with tempfile.TemporaryDirectory(prefix="pytensor-") as compiledir:
            if args.fresh_cache or args.stand_in:  # read when pytensor is first imported
                os.environ["PYTENSOR_FLAGS"] = f"base_compiledir={compiledir}"
                os.environ["NUMBA_CACHE_DIR"] = compiledir  # the library's own functions
            seeded = None
            if args.stand_in:  # a process of its own, as the image's build
                begin = time.perf_counter()
                subprocess.run([sys.executable, "-m", "gapmodel", "compile",
                                str(spec_file(args.specs[0])), "--stand-in"],
                               check=True, stdout=subprocess.DEVNULL)
                seeded = time.perf_counter() - begin
            row = run_one(args.specs[0], args.data, args.registry, warm, args.target_accept,
                          pilot, args.pilot_maxdepth[0] or None, args.seeds[0] or None,
                          args.pilot_method[0] or None, args.areas[0] or None,
                          args.warm_maxdepth[0] or None, args.scales[0])
        if seeded is not None:
            row["stand_in_s"] = seeded
        print(json.dumps(row))
        return
    if args.warm and len(args.warm) % 2:
        parser.error("--warm takes (tune, draws) pairs")
    if args.pilot and len(args.pilot) % 2:
        parser.error("--pilot takes (tune, draws) pairs")
    pilots: list[tuple[int, ...]] = [] if args.pilot is None else \
        [tuple(args.pilot[i:i + 2]) for i in range(0, len(args.pilot), 2)] or [()]
    print(machine_line(1, None), flush=True)
    rows = []
    with checkouts(args.revisions) as trees, tempfile.TemporaryDirectory(
            prefix="pytensor-") as shared:
        if args.new_cache:  # the children inherit it
            os.environ["PYTENSOR_FLAGS"] = f"base_compiledir={shared}"
            os.environ["NUMBA_CACHE_DIR"] = shared
        for spec in args.specs:
            warm_rows = _warm_rows(spec, args.warm, args.no_cold)
            runs = [(w, None, 0, "", wd) for w in warm_rows
                    for wd in (args.warm_maxdepth if w else [0])] + [
                (w, p, d, m, wd) for p in pilots for m in args.pilot_method
                for d in args.pilot_maxdepth for w in warm_rows if w
                for wd in args.warm_maxdepth]
            # seeds outermost: each seed's rows run next to each other on the machine
            for areas, seed, (warm, pilot, depth, method, warm_depth), scale, rev in product(
                    args.areas, args.seeds, runs, args.scales, args.revisions):
                cmd = [sys.executable, __file__, "--specs", spec, "--data", args.data,
                       "--registry", args.registry, "--pilot-maxdepth", str(depth),
                       "--seeds", str(seed), "--areas", str(areas),
                       "--warm-maxdepth", str(warm_depth), "--scales", str(scale),
                       "--one", *map(str, warm or ())]
                if method:
                    cmd += ["--pilot-method", method]
                if args.fresh_cache:
                    cmd += ["--fresh-cache"]
                if args.stand_in:
                    cmd += ["--stand-in"]
                if args.target_accept:
                    cmd += ["--target-accept", str(args.target_accept)]
                if pilot is not None:
                    cmd += ["--pilot", *map(str, pilot)]
                label = {"spec": Path(spec).stem, "areas": areas or None,
                         "start": "pilot" if pilot is not None else "warm" if warm else "cold"}
                row = run_at(cmd, label, trees[rev], rev, args.timeout)
                print("done:", _format(row), flush=True)
                rows.append(row)
    print()
    print(report(rows))


def _warm_rows(spec_path: str, pairs: list[int] | None, no_cold: bool
               ) -> list[tuple[int, int] | None]:
    """None for the cold row, then a (tune, draws) pair per warm row."""
    from gapmodel.spec import ModelSpec

    if pairs:
        warm = list(zip(pairs[::2], pairs[1::2], strict=True))
    else:
        settings = ModelSpec.from_yaml(ROOT / spec_path).sampler.warm_start
        warm = [(settings.tune, settings.draws)] if settings else [(300, 1000)]
    return ([] if no_cold else [None]) + warm


def report(rows: list[dict]) -> str:
    lines = [f"{'spec':26} {'areas':>5} {'data':>5} {'rev':>8} {'start':18} {'seed':>4} "
             f"{'sampler':7} "
             f"{'tune':>5} {'draws':>5} "
             f"{'accept':>6} {'wall s':>7} {'start s':>7} {'derive s':>8} "
             f"{'min ESS':>7} {'ESS/s':>6} {'R-hat':>6} {'grads/draw':>10} {'step':>6} "
             f"{'div':>4} {'gate':>4}  worst"]
    return "\n".join(lines + [_format(row) for row in rows])


def _format(row: dict) -> str:
    data = f"x{row.get('scale', 1.0):g}"
    head = (f"{row['spec']:26} {row.get('areas') or '':>5} {data:>5} "
            f"{row.get('rev', 'work'):>8} {row['start']:18}")
    if "note" in row:
        return f"{head} {row['note']}"
    return (f"{head} {row.get('seed', ''):>4} {row['sampler']:7} {row['tune']:5d} "
            f"{row['draws']:5d} "
            f"{row['accept']:6.2f} {row['wall_s']:7.1f} {row.get('start_s', 0):7.1f} "
            f"{row['derive_s']:8.1f} "
            f"{row['min_ess']:7.0f} "
            f"{row['ess_per_s']:6.2f} "
            f"{row['max_rhat']:6.3f} {row['grads_draw']:10.1f} {row['step']:6.3f} "
            f"{row['divergences']:4d} {'yes' if row['gate'] else 'no':>4}  {row['worst']}"
            + (f" (stand-in compiled in {row['stand_in_s']:.1f} s)" if "stand_in_s" in row
               else ""))


if __name__ == "__main__":
    main()
