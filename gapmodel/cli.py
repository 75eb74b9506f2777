"""Command line: `gapmodel simulate | validate | build | demo`."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gapmodel.data import Dataset, DataValidationError, Problem, validate_directory

if TYPE_CHECKING:
    from gapmodel.simulate import Scenario
    from gapmodel.spec import ModelSpec

app = typer.Typer(
    help="gapmodel: Bayesian estimates of missing diagnoses with honest uncertainty.",
    no_args_is_help=True,
    add_completion=False,
)


class Register(StrEnum):
    cells = "cells"
    totals = "totals"


class Format(StrEnum):
    csv = "csv"
    parquet = "parquet"


def print_problems(problems: list[Problem], *, limit: int = 200) -> None:
    order = {"error": 0, "warning": 1, "note": 2}
    shown = sorted(problems, key=lambda p: order[p.severity])
    for problem in shown[:limit]:
        typer.echo(f"  {problem}", err=problem.severity == "error")
    if len(shown) > limit:
        typer.echo(f"  ... and {len(shown) - limit} more")


def print_summary(dataset: Dataset) -> None:
    s = dataset.summary()
    typer.echo(f"Dataset '{s['name']}'" + (f" ({s['condition']})" if s["condition"] else ""))
    typer.echo(f"  content hash   {s['hash'][:16]}")
    levels = ", ".join(f"{n:,} {lvl}" for lvl, n in s["levels"].items())
    typer.echo(f"  areas          {levels}")
    attrs = "; ".join(f"{a}: {len(v)}" for a, v in s["attributes"].items())
    typer.echo(f"  strata         {s['strata']:,} ({attrs})")
    typer.echo(f"  cells          {s['cells']:,} with population {s['population']:,}")
    censoring = ", ".join(f"{k} {v:,}" for k, v in sorted(s["censoring"].items()))
    typer.echo(f"  observations   {s['observations']:,} ({censoring}); "
               f"{s['not_stated_observations']:,} 'not stated'")
    lo, hi = s["recorded_range"]
    recorded = f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"
    typer.echo(f"  recorded       {recorded} on the registers")
    typer.echo(f"  reference      {s['reference_rows']} evidence rows")
    typer.echo(f"  covariates     {', '.join(s['covariates']) or 'none'}")
    typer.echo(f"  adjacency      {s['adjacency_edges']:,} edges")


def _validate_or_exit(directory: Path, quiet: bool = False) -> Dataset:
    dataset, problems = validate_directory(directory)
    errors = sum(p.severity == "error" for p in problems)
    if problems and not (quiet and not errors):
        typer.echo(f"Validation report for {directory}:")
        print_problems(problems)
    if dataset is None:
        typer.echo(f"{directory}: {errors} error(s); the dataset was refused.", err=True)
        raise typer.Exit(code=1)
    return dataset


@app.command()
def validate(
    directory: Annotated[Path, typer.Argument(help="dataset directory (CSV or Parquet files)")],
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report as JSON")]
    = None,
) -> None:
    """Validate a dataset directory; exit 1 on any error, naming file, line, column, rule."""
    dataset, problems = validate_directory(directory)
    if json_out is not None:
        report = {"valid": dataset is not None,
                  "summary": dataset.summary() if dataset is not None else None,
                  "problems": [p.as_dict() for p in problems]}
        json_out.write_text(json.dumps(report, indent=2, default=str))
    counts = {k: sum(p.severity == k for p in problems) for k in ("error", "warning", "note")}
    typer.echo(f"Validation report for {directory}: {counts['error']} error(s), "
               f"{counts['warning']} warning(s), {counts['note']} note(s)")
    print_problems(problems)
    if dataset is None:
        typer.echo("The dataset was refused.", err=True)
        raise typer.Exit(code=1)
    print_summary(dataset)
    typer.echo("OK: the dataset is valid.")


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="directory to write the scenario to")],
    areas: Annotated[int, typer.Option("--areas", min=12, help="number of practices")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    register: Annotated[Register, typer.Option(help="per-cell registers or practice totals")]
    = Register.cells,
    suppress: Annotated[bool, typer.Option(help="publish counts 1-7 as '*'")] = False,
    round_to: Annotated[int | None, typer.Option(help="publish counts rounded to this base")]
    = None,
    fmt: Annotated[Format, typer.Option("--format", help="file format")] = Format.csv,
) -> None:
    """Simulate a scenario with known truth and write it as a dataset directory."""
    from gapmodel.simulate import simulate as run_simulation

    scenario = run_simulation(areas, seed, register=register.value, suppress=suppress,
                              round_to=round_to)
    scenario.write(out, fmt=fmt.value)
    print_summary(scenario.dataset)
    typer.echo(f"Wrote {out} (truth in {out / 'truth'}).")


@app.command()
def build(
    name: Annotated[str, typer.Argument(help="hypertension_pcn | hypertension_subicb | "
                                             "dementia_pcn")],
    out: Annotated[Path, typer.Option("--out", help="directory to write the dataset to")],
    data: Annotated[Path | None, typer.Option("--data", help="directory of the public England "
                                              "files (default: $GAPMODEL_DATA_DIR)")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="file format")] = Format.csv,
) -> None:
    """Build an England dataset from the official-format public files."""
    from gapmodel.data.england import BUILDERS

    if name not in BUILDERS:
        typer.echo(f"Unknown dataset '{name}'; choose one of: {', '.join(BUILDERS)}", err=True)
        raise typer.Exit(code=2)
    try:
        dataset = BUILDERS[name](data)
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    dataset.write(out, fmt=fmt.value)
    notes = [p for p in dataset.report if p.severity != "error"]
    if notes:
        typer.echo("Harmonisation and warnings:")
        print_problems(notes)
    print_summary(dataset)
    typer.echo(f"Wrote {out}.")


def _spec_and_data(spec_path: Path, data: Path | None, draws: int | None = None
                   ) -> tuple[ModelSpec, Dataset, Scenario | None]:
    """The spec (tune and draws set to `draws` if given) and its data; exits 2 on a bad spec
    or missing files, 1 on data that fail validation."""
    from gapmodel.sources import load_spec_data
    from gapmodel.spec import ModelSpec

    try:
        spec = ModelSpec.from_yaml(spec_path)
    except (OSError, ValueError) as exc:
        typer.echo(f"{spec_path}: not a valid model spec:\n{exc}", err=True)
        raise typer.Exit(code=2) from None
    if draws is not None:
        spec = spec.model_copy(update={"sampler": spec.sampler.with_lengths(draws, draws)})
    try:
        dataset, scenario = load_spec_data(spec, data)
    except DataValidationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    return spec, dataset, scenario


def _spec_stand_in(spec_path: Path) -> tuple[ModelSpec, Dataset]:
    """The spec and a stand-in of its data (`gapmodel.sources.spec_stand_in`); exits 2 on a
    bad spec or one whose data have no stand-in."""
    from gapmodel.sources import spec_stand_in
    from gapmodel.spec import ModelSpec

    try:
        spec = ModelSpec.from_yaml(spec_path)
        return spec, spec_stand_in(spec)
    except (OSError, ValueError) as exc:
        typer.echo(f"{spec_path}: {exc}", err=True)
        raise typer.Exit(code=2) from None


def _fit_and_register(spec_path: Path, data: Path | None, json_out: Path | None,
                      approximate: bool, registry: Path | None, draws: int | None,
                      promote: bool, cold_start: bool = False) -> None:
    from gapmodel.fit import fit
    from gapmodel.registry import Registry, RegistryError
    from gapmodel.summary import fit_summary, format_summary

    spec, dataset, scenario = _spec_and_data(spec_path, data, draws)
    store = Registry(registry)
    start_from = None if approximate or cold_start else store.start_from(spec)
    typer.echo(f"Fitting {spec.name} on dataset {dataset.name} ({len(dataset.cells):,} cells, "
               f"{len(dataset.observations):,} observations) with "
               + _sampling_plan(spec, start_from, approximate))
    result = fit(dataset, spec, progress=True, method="advi" if approximate else "nuts",
                 start_from=start_from)
    if "reason" in result.start:
        typer.echo(f"started as '{result.start['kind']}': {result.start['reason']}")
    summary = fit_summary(result, scenario.truth.cells if scenario else None)
    version = store.save(result, dataset)
    summary["version"] = version
    typer.echo(format_summary(summary))
    typer.echo(f"saved as version {version} in {store.root / spec.name}")
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=2, default=float))
    if promote and result.passed:
        store.promote(version)
        typer.echo(f"version {version} is now active for {spec.name}")
    elif promote:
        try:
            store.active(spec.name)
            typer.echo("the active version is unchanged: this fit failed the gate")
        except RegistryError:
            typer.echo("no version was promoted: this fit failed the gate")


def _sampling_plan(spec, start_from, approximate: bool) -> str:
    s = spec.sampler
    if approximate:
        return "ADVI (approximate, exploration only)"
    cold = f"{s.name}: {s.chains} chains x ({s.tune} tune + {s.draws} draws)"
    if s.warm_start is None or (start_from is None and s.pilot is None):
        return cold
    warm = f"{s.chains} chains x ({s.warm_start.tune} tune + {s.warm_start.draws} draws)"
    if start_from is not None:
        return f"PyMC's NUTS from version {start_from[0]}'s posterior: {warm}"
    if s.pilot.method == "pathfinder":
        return (f"Pathfinder, then PyMC's NUTS adapting its covariance: {s.chains} chains x "
                f"({s.pilot.tune} tune + {s.warm_start.draws} draws)")
    return (f"a {s.name} pilot, {s.chains} chains x ({s.pilot.tune} tune + {s.pilot.draws} "
            f"draws), then PyMC's NUTS under its covariance: {warm}")


@app.command("fit")
def fit_command(
    spec: Annotated[Path, typer.Argument(help="model spec (models/*.yaml)")],
    data: Annotated[Path | None, typer.Option("--data", help="data directory (England files "
                                              "or a dataset directory)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary as JSON")]
    = None,
    approximate: Annotated[bool, typer.Option("--approximate", help="ADVI instead of NUTS: "
                                              "fast, labelled, never promotable")] = False,
    registry: Annotated[Path | None, typer.Option(help="registry root "
                                                  "(default $GAPMODEL_REGISTRY or "
                                                  "models/registry)")] = None,
    draws: Annotated[int | None, typer.Option(help="override tune and draws per chain")]
    = None,
    promote: Annotated[bool, typer.Option(help="make the fit active if it passes the gate")]
    = False,
    cold_start: Annotated[bool, typer.Option(help="do not start from the active version's "
                                             "posterior (a spec's pilot still runs)")]
    = False,
) -> None:
    """Fit a spec: sample, diagnose, gate, save a version; print the summary. Specs with
    warm-start settings start from the active version's posterior where there is one
    (else from their pilot run, if they have one)."""
    _fit_and_register(spec, data, json_out, approximate, registry, draws, promote,
                      cold_start)


@app.command("compile")
def compile_command(
    spec: Annotated[Path, typer.Argument(help="model spec (models/*.yaml)")],
    data: Annotated[Path | None, typer.Option("--data", help="data directory (England files "
                                              "or a dataset directory)")] = None,
    stand_in: Annotated[bool, typer.Option(
        "--stand-in", help="compile on made-up data in the layout of the spec's (England "
                           "builders and simulated specs), needing no files")] = False,
) -> None:
    """Compile a spec's functions without fitting, into the compile cache
    ($GAPMODEL_COMPILE_CACHE where set): the next fit of the same data finds them compiled,
    and one of new data for the same layout most of them. With --stand-in, as an image
    is built: a first fit of the real data then finds most of its operations compiled."""
    import pytensor

    from gapmodel.fit import precompile

    if stand_in:
        if data is not None:
            typer.echo("--stand-in and --data exclude each other", err=True)
            raise typer.Exit(code=2)
        spec_, dataset = _spec_stand_in(spec)
    else:
        spec_, dataset, _ = _spec_and_data(spec, data)
    typer.echo(f"Compiling {spec_.name} on dataset {dataset.name} "
               f"({len(dataset.cells):,} cells) into {pytensor.config.base_compiledir}")
    for part, seconds in precompile(dataset, spec_).items():
        typer.echo(f"  {part}: {seconds:.1f} s")


@app.command()
def versions(
    model: Annotated[str | None, typer.Argument(help="model name (default: all)")] = None,
    registry: Annotated[Path | None, typer.Option(help="registry root")] = None,
) -> None:
    """List fitted versions, their gate verdicts and which one is active."""
    from gapmodel.registry import Registry

    rows = Registry(registry).versions(model)
    if not rows:
        typer.echo("no fitted versions")
        return
    for meta in rows:
        gate = "gate passed" if meta["gate"]["passed"] else "gate FAILED"
        flag = "* active" if meta["active"] else ""
        typer.echo(f"{meta['model']:28} {meta['version']:28} {meta['created']:26} "
                   f"{meta['method']:5} {gate:12} {flag}")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="version id")],
    force: Annotated[bool, typer.Option(help="promote a fit that failed the gate")] = False,
    reason: Annotated[str, typer.Option(help="why (required with --force; recorded)")] = "",
    registry: Annotated[Path | None, typer.Option(help="registry root")] = None,
) -> None:
    """Make a version active (atomic switch); gate-failing fits only with --force."""
    from gapmodel.registry import Registry, RegistryError

    try:
        Registry(registry).promote(version, force=force, reason=reason)
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"version {version} is now active")


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="model name")],
    registry: Annotated[Path | None, typer.Option(help="registry root")] = None,
) -> None:
    """Re-activate the version that was active before the current one."""
    from gapmodel.registry import Registry, RegistryError

    try:
        target = Registry(registry).rollback(model)
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{model}: version {target} is active again")


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", help="directory to write index.html to")],
    version: Annotated[str | None, typer.Argument(help="version id (default: the active "
                                                  "version of --model, or of the only model)")]
    = None,
    model: Annotated[str | None, typer.Option("--model", help="model name")] = None,
    registry: Annotated[Path | None, typer.Option(help="registry root")] = None,
) -> None:
    """Write a self-contained HTML report of a version (figures inline, no web access)."""
    from gapmodel.registry import Registry, RegistryError
    from gapmodel.report import build_report

    store = Registry(registry)
    try:
        if version is None:
            models = [model] if model else store.models()
            if len(models) != 1:
                raise RegistryError("name a version or a model (--model); models: "
                                    + (", ".join(models) or "none"))
            if store.active_id(models[0]) is None:
                listed = [m["version"] for m in store.versions(models[0])]
                raise RegistryError(f"model '{models[0]}' has no active version; name one: "
                                    + (", ".join(listed) or "none fitted"))
            version = store.active_id(models[0])
        loaded = store.load(version)
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    if model and loaded.meta["model"] != model:
        typer.echo(f"version {version} belongs to model '{loaded.meta['model']}', "
                   f"not '{model}'", err=True)
        raise typer.Exit(code=1)
    active = store.active_id(loaded.meta["model"]) == loaded.id
    written = build_report(loaded, out, active=active)
    gate = "passed" if loaded.meta["gate"]["passed"] else "FAILED (the report says so)"
    typer.echo(f"Wrote {written.path} for {loaded.meta['model']} version {loaded.id} "
               f"({loaded.meta['method']}, gate {gate}).")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="where to write the default scenario")]
    = Path("out/synthetic_icb"),
    spec: Annotated[Path, typer.Option(help="the default model spec")]
    = Path("models/synthetic_icb.yaml"),
    fit: Annotated[bool, typer.Option(help="fit the model after validating the data")] = True,
    draws: Annotated[int | None, typer.Option(help="override tune and draws per chain")]
    = None,
) -> None:
    """The embedded default: simulate the synthetic ICB, validate it, fit it, promote it."""
    from gapmodel.simulate import default_scenario

    started = time.perf_counter()
    typer.echo("Simulating the default scenario (an ICB-like area, known truth)...")
    scenario = default_scenario()
    scenario.write(out)
    dataset = _validate_or_exit(out, quiet=True)
    if dataset.hash != scenario.dataset.hash:
        typer.echo("The written dataset does not read back identically.", err=True)
        raise typer.Exit(code=1)
    print_summary(dataset)
    truth = scenario.truth.cells
    share = truth["recorded"].sum() / truth["cases"].sum()
    typer.echo(f"  truth          {int(truth['cases'].sum()):,} true cases, "
               f"{int(truth['undiagnosed'].sum()):,} undiagnosed "
               f"(true diagnosis rate {share:.1%})")
    typer.echo(f"Wrote {out} in {time.perf_counter() - started:.1f} s.")
    if fit:
        _fit_and_register(spec, None, None, False, None, draws, promote=True)


# -- posterior products: estimates, targets, equity ------------------------------------


class OutputFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    json = "json"


class Unit(StrEnum):
    area = "area"
    area_stratum = "area_stratum"


class CapacityUnit(StrEnum):
    contacts = "contacts"
    areas = "areas"


VersionArg = Annotated[str | None, typer.Argument(
    help="version id (default: the active version of --model, or of the only model)")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="model name")]
RegistryOpt = Annotated[Path | None, typer.Option(help="registry root")]
WhereOpt = Annotated[str | None, typer.Option(
    "--where", help="cell filter, e.g. \"ethnicity == 'Black' and age_band in ['80+']\"")]
ProbOpt = Annotated[float, typer.Option(help="interval probability")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="output format")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="file to write (default: "
                                             "standard output; required for parquet)")]


def _posterior_view(version: str | None, model: str | None, registry: Path | None):
    """The view of a named version, else of the active version of the (only) model."""
    from gapmodel.posterior import PosteriorView
    from gapmodel.registry import Registry, RegistryError

    store = Registry(registry)
    try:
        if version is None:
            models = [model] if model else store.models()
            if len(models) != 1:
                raise RegistryError("name a version or a model (--model); models: "
                                    + (", ".join(models) or "none"))
            loaded = store.active(models[0])
        else:
            loaded = store.load(version)
            if model and loaded.meta["model"] != model:
                raise RegistryError(f"version {version} belongs to model "
                                    f"'{loaded.meta['model']}', not '{model}'")
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    return PosteriorView.from_version(loaded)


def _query(call):
    """Run a posterior query; its QueryError becomes a message and exit code 2."""
    from gapmodel.posterior import QueryError

    try:
        return call()
    except QueryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


def _emit(table, fmt: OutputFormat, out: Path | None, header: dict, note: str) -> None:
    """Write a result table as CSV, Parquet or JSON (with its header) to a file or stdout;
    the note (version, interval) goes to standard error so the output stays clean."""
    if fmt is OutputFormat.parquet and out is None:
        typer.echo("error: parquet output needs --out PATH", err=True)
        raise typer.Exit(code=2)
    if fmt is OutputFormat.parquet:
        table.attrs = {}
        table.to_parquet(out, index=False)
    else:
        if fmt is OutputFormat.csv:
            text = table.to_csv(index=False, lineterminator="\n")
        else:
            rows = json.loads(table.to_json(orient="records", double_precision=10))
            text = json.dumps({**header, "rows": rows}, indent=1, default=str) + "\n"
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")
    typer.echo(note + (f"; wrote {out}" if out is not None else ""), err=True)


def _equity_option(text: str | None):
    """None, 'least_diagnosed', or ATTRIBUTE:VALUE=WEIGHT,VALUE=WEIGHT."""
    if text is None or text == "least_diagnosed":
        return text
    attribute, _, pairs = text.partition(":")
    weights = {}
    try:
        for pair in filter(None, pairs.split(",")):
            value, _, weight = pair.partition("=")
            weights[value.strip()] = float(weight)
    except ValueError:
        weights = {}
    if not attribute.strip() or not weights:
        typer.echo("error: --equity is 'least_diagnosed' or ATTRIBUTE:VALUE=WEIGHT,... "
                   "(e.g. imd_quintile:1=2,2=1.5)", err=True)
        raise typer.Exit(code=2)
    return {"attribute": attribute.strip(), "weights": weights}


@app.command("estimates")
def estimates_command(
    version: VersionArg = None,
    model: ModelOpt = None,
    by: Annotated[list[str] | None, typer.Option(
        "--by", "--level", help="group by a level or attribute (repeat for several; "
        "none: the total)")] = None,
    where: WhereOpt = None,
    area: Annotated[list[str] | None, typer.Option("--area", help="keep these base "
                                                   "areas (repeat)")] = None,
    exceed: Annotated[list[float] | None, typer.Option(
        "--exceed", help="add P(undiagnosed > K) (repeat)")] = None,
    prob: ProbOpt = 0.9,
    fmt: FormatOpt = OutputFormat.csv,
    out: OutOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Expected, recorded and undiagnosed, diagnosis rate, yield per contact and number
    needed to screen per group, from per-draw sums (intervals are joint)."""
    from gapmodel.posterior import estimates

    view = _posterior_view(version, model, registry)
    table = _query(lambda: estimates(view, by=by or None, where=where, areas=area,
                                     prob=prob, exceed=exceed or ()))
    header = dict(table.attrs)
    _emit(table, fmt, out, header, f"version {view.version}: {len(table)} group(s), "
          f"{prob:.0%} intervals from {view.n_draws} draws")


@app.command()
def targets(
    capacity: Annotated[int, typer.Option("--capacity", help="contacts (people) or "
                                          "number of units, see --capacity-unit")],
    version: VersionArg = None,
    model: ModelOpt = None,
    unit: Annotated[Unit, typer.Option(help="areas, or area x stratum groups")] = Unit.area,
    capacity_unit: Annotated[CapacityUnit, typer.Option(
        "--capacity-unit", help="what --capacity counts")] = CapacityUnit.contacts,
    level: Annotated[str | None, typer.Option(help="area level of the units (default: "
                                              "the base areas)")] = None,
    where: WhereOpt = None,
    sensitivity: Annotated[float, typer.Option(help="share of contacted undiagnosed "
                                               "people the check finds")] = 1.0,
    equity: Annotated[str | None, typer.Option(
        "--equity", help="'least_diagnosed' or ATTRIBUTE:VALUE=WEIGHT,... "
        "(e.g. imd_quintile:1=2,2=1.5)")] = None,
    prob: ProbOpt = 0.9,
    fmt: FormatOpt = OutputFormat.csv,
    out: OutOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Outreach plan: the units where the capacity finds the most undiagnosed people,
    with people found, yield and P(in the optimal set)."""
    from gapmodel.posterior import plan

    weights = _equity_option(equity)
    view = _posterior_view(version, model, registry)
    result = _query(lambda: plan(view, capacity, capacity_unit=capacity_unit.value,
                                 unit=unit.value, level=level, where=where,
                                 sensitivity=sensitivity, equity=weights, prob=prob))
    found = result.total["found"]
    header = {**result.settings, "total": result.total}
    _emit(result.units, fmt, out, header,
          f"version {view.version}: {result.total['units']} unit(s), "
          f"{result.total['contacts']:,} contacts find {found['mean']:,.0f} people "
          f"({prob:.0%} interval {found['lower']:,.0f} to {found['upper']:,.0f})")


@app.command("equity")
def equity_command(
    by: Annotated[str, typer.Option("--by", help="attribute or level, e.g. ethnicity")],
    version: VersionArg = None,
    model: ModelOpt = None,
    reference: Annotated[str | None, typer.Option(
        help="reference group (default: the largest)")] = None,
    where: WhereOpt = None,
    inequality: Annotated[bool, typer.Option(
        help="also the slope and relative index of inequality along --by (ordered)")]
    = False,
    prob: ProbOpt = 0.9,
    fmt: FormatOpt = OutputFormat.csv,
    out: OutOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Diagnosis rate per group with ratio and difference against a reference group."""
    from gapmodel.posterior import equity as equity_table
    from gapmodel.posterior import inequality as inequality_table

    view = _posterior_view(version, model, registry)
    table = _query(lambda: equity_table(view, by=by, reference=reference, where=where,
                                        prob=prob))
    header = dict(table.attrs)
    note = (f"version {view.version}: diagnosis rates by {by} against "
            f"{table.attrs['reference']}, {prob:.0%} intervals")
    if inequality:
        index = _query(lambda: inequality_table(view, by, where=where, prob=prob))
        header["inequality"] = {**index.attrs, "rows": index.reset_index().to_dict("records")}
        for name, row in index.iterrows():
            note += (f"\n{name.upper()} {row['mean']:.3f} ({prob:.0%} interval "
                     f"{row['lower']:.3f} to {row['upper']:.3f}) from "
                     f"{index.attrs['order'][0]} to {index.attrs['order'][-1]}")
    _emit(table, fmt, out, header, note)


# -- commands of other installed packages (entry points "gapmodel.commands") --------------


def _add_plugins() -> None:
    """Add each entry point of group ``gapmodel.commands``: a Typer app becomes a command
    group, a function a command. The library itself knows none of them by name."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="gapmodel.commands"):
        try:
            command = entry.load()
        except ImportError:
            continue  # a plugin whose dependencies are missing adds nothing
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=entry.name)
        else:
            app.command(entry.name)(command)


_add_plugins()


def main() -> None:
    app()
