"""The command line: simulate -> validate -> load, refusals with exit codes, England build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_data_dir
from typer.testing import CliRunner

from gapmodel.cli import app
from gapmodel.data import load_dataset
from gapmodel.simulate import load_truth

runner = CliRunner()


def test_simulate_validate_load_round_trip(tmp_path: Path):
    out = tmp_path / "scenario"
    result = runner.invoke(app, ["simulate", "--areas", "20", "--seed", "4", "--out", str(out),
                                 "--suppress", "--round-to", "5"])
    assert result.exit_code == 0, result.output
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["validate", str(out), "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "OK: the dataset is valid." in result.output
    summary = json.loads(report.read_text())
    dataset = load_dataset(out)
    assert summary["valid"] and summary["summary"]["hash"] == dataset.hash
    assert {"rounded", "suppressed"} & set(summary["summary"]["censoring"])
    truth = load_truth(out)
    assert len(truth.cells) == len(dataset.cells)


def test_validate_refuses_with_file_line_column(tmp_path: Path):
    out = tmp_path / "scenario"
    assert runner.invoke(app, ["simulate", "--areas", "12", "--out", str(out)]).exit_code == 0
    lines = (out / "population.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",-5"
    (out / "population.csv").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 1
    assert "population.csv, line 4, column 'population': [negative]" in result.output
    assert "The dataset was refused." in result.output


def test_demo_without_fit_writes_and_validates_the_default(tmp_path: Path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "default"), "--no-fit"])
    assert result.exit_code == 0, result.output
    assert "300 practice" in result.output and "undiagnosed" in result.output
    assert load_dataset(tmp_path / "default").name == "synthetic_icb"


@pytest.mark.skipif(shared_data_dir() is None, reason="England data directory absent")
def test_build_england_dataset(tmp_path: Path):
    result = runner.invoke(app, ["build", "hypertension_subicb", "--data",
                                 str(shared_data_dir()), "--out", str(tmp_path / "subicb")])
    assert result.exit_code == 0, result.output
    assert "106 sub_icb" in result.output
    assert load_dataset(tmp_path / "subicb").summary()["adjacency_edges"] == 257
    missing = runner.invoke(app, ["build", "hypertension_pcn", "--data", str(tmp_path),
                                  "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2


def test_fit_with_a_bad_spec_explains(tmp_path: Path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nsampler: {chain: 4}\n")
    result = runner.invoke(app, ["fit", str(spec)])
    assert result.exit_code == 2
    assert "not a valid model spec" in result.output


def test_compile_compiles_without_fitting(tmp_path: Path):
    """`gapmodel compile` builds the spec's model and compiles the sampler's log density and
    gradient and the derive step's function; a bad spec is refused."""
    spec = tmp_path / "small.yaml"
    text = (Path(__file__).parents[1] / "models" / "synthetic_icb.yaml").read_text()
    spec.write_text(text.replace("areas: 300", "areas: 16"))
    result = runner.invoke(app, ["compile", str(spec)])
    assert result.exit_code == 0, result.output
    assert "Compiling synthetic_icb" in result.output
    for part in ("build", "log density and gradient", "derive step"):
        assert f"  {part}: " in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsampler: {chain: 4}\n")
    refused = runner.invoke(app, ["compile", str(bad)])
    assert refused.exit_code == 2 and "not a valid model spec" in refused.output
    stand_in = runner.invoke(app, ["compile", str(spec), "--stand-in"])
    assert stand_in.exit_code == 0, stand_in.output  # a simulated spec: its own scenario
    assert "  log density and gradient: " in stand_in.output


def test_compile_on_a_stand_in_is_refused_where_there_is_none(tmp_path: Path):
    text = (Path(__file__).parents[1] / "models" / "synthetic_icb.yaml").read_text()
    spec = tmp_path / "directory.yaml"
    spec.write_text(text.replace("data:\n  kind: simulate\n  areas: 300\n  seed: 0\n"
                                 "  registers: cells\n",
                                 "data: {kind: directory, path: somewhere}\n"))
    result = runner.invoke(app, ["compile", str(spec), "--stand-in"])
    assert result.exit_code == 2
    assert "a dataset directory has no stand-in" in result.output
    both = runner.invoke(app, ["compile", str(spec), "--stand-in", "--data", str(tmp_path)])
    assert both.exit_code == 2 and "exclude each other" in both.output
