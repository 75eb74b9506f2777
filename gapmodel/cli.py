"""Command line: `gapmodel simulate | validate | build | demo`."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from gapmodel.data import Dataset, Problem, validate_directory

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


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="where to write the default scenario")]
    = Path("out/synthetic_icb"),
) -> None:
    """The embedded default: simulate the synthetic ICB, validate it, print its summary."""
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


def main() -> None:
    app()
