"""Every validation rule, each with a bad file: the message names file, line, column, rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, write_tiny

from gapmodel.data import DataValidationError, Problem, load_dataset, validate_directory


def problems_for(tmp_path: Path, **replace: str | None) -> list[Problem]:
    dataset, problems = validate_directory(write_tiny(tmp_path / "bad", **replace))
    assert dataset is None, "a broken dataset must be refused"
    return [p for p in problems if p.severity == "error"]


def edit(stem: str, old: str, new: str) -> str:
    text = next(v for k, v in TINY.items() if k.split(".")[0] == stem)
    assert old in text, f"test setup: {old!r} not in {stem}"
    return text.replace(old, new, 1)


CASES = {
    "missing column": (
        {"population": TINY["population.csv"].replace("population\n", "pop\n", 1)},
        "population.csv", 1, "population", "missing-column"),
    "renamed column (case)": (
        {"population": TINY["population.csv"].replace("population\n", "Population\n", 1)},
        "population.csv", 1, "population", "missing-column"),
    "non-numeric population": (
        {"population": edit("population", "P1,s2,100", "P1,s2,lots")},
        "population.csv", 3, "population", "not-a-number"),
    "fractional population": (
        {"population": edit("population", "P1,s2,100", "P1,s2,100.5")},
        "population.csv", 3, "population", "not-an-integer"),
    "negative population": (
        {"population": edit("population", "P1,s3,100", "P1,s3,-4")},
        "population.csv", 4, "population", "negative"),
    "negative count": (
        {"register": edit("register", "P1,F,White,10", "P1,F,White,-3")},
        "register.csv", 2, "count", "negative"),
    "non-numeric count": (
        {"register": edit("register", "P2,,,20", "P2,,,twenty")},
        "register.csv", 6, "count", "not-a-number"),
    "count above population": (
        {"register": edit("register", "P1,F,White,10", "P1,F,White,150")},
        "register.csv", 2, "count", "count-above-population"),
    "unknown area in population": (
        {"population": TINY["population.csv"] + "P9,s1,50\n"},
        "population.csv", 14, "area", "unknown-code"),
    "unknown stratum in population": (
        {"population": edit("population", "P3,s4,100", "P3,s9,100")},
        "population.csv", 13, "stratum", "unknown-code"),
    "unknown area in register": (
        {"register": edit("register", "P3,,,25", "P7,,,25")},
        "register.csv", 7, "area", "unknown-code"),
    "unknown attribute value in register": (
        {"register": edit("register", "P1,F,Black,*", "P1,F,Purple,*")},
        "register.csv", 3, "ethnicity", "unknown-code"),
    "unknown level in register": (
        {"register": "area,level,count\nN1,pcn,30\nP3,district,25\n"},
        "register.csv", 3, "level", "unknown-code"),
    "duplicate cell": (
        {"population": TINY["population.csv"] + "P1,s1,100\n"},
        "population.csv", 14, "area,stratum", "duplicate"),
    "duplicate area": (
        {"areas": TINY["areas.csv"] + "P2,Practice 2 again,N1,I1\n"},
        "areas.csv", 5, "area", "duplicate"),
    "duplicate stratum": (
        {"strata": TINY["strata.csv"] + "s1,60-79,F,White\n"},
        "strata.csv", 6, "stratum", "duplicate"),
    "duplicate edge reversed": (
        {"adjacency": "area1,area2\nP1,P2\nP2,P1\n"},
        "adjacency.csv", 3, "area1,area2", "duplicate"),
    "overlapping observations": (
        {"register": TINY["register.csv"] + "P2,F,White,4\n"},
        "register.csv", 8, None, "overlap"),
    "adjacency unknown area": (
        {"adjacency": "area1,area2\nP1,P2\nP2,Q5\n"},
        "adjacency.csv", 3, "area2", "unknown-code"),
    "adjacency self-loop": (
        {"adjacency": "area1,area2\nP1,P2\nP3,P3\n"},
        "adjacency.csv", 3, "area2", "self-loop"),
    "rate above one": (
        {"reference": edit("reference", "M40,,,0.2,0.15,0.25", "M40,,,1.2,0.15,0.25")},
        "reference.csv", 3, "rate", "above-maximum"),
    "lower above upper": (
        {"reference": edit("reference", "M40,,,0.2,0.15,0.25", "M40,,,0.2,0.3,0.25")},
        "reference.csv", 3, "lower", "interval-order"),
    "y above n": (
        {"reference": edit("reference", "F40,30,200", "F40,300,200")},
        "reference.csv", 2, "y", "y-above-n"),
    "design effect below one": (
        {"reference": "ref_stratum,y,n,design_effect\nF40,30,200,0.5\nM40,40,200,\n"},
        "reference.csv", 2, "design_effect", "below-minimum"),
    "unmapped stratum": (
        {"reference_map": edit("reference_map", "s4,M40\n", "")},
        "reference_map.csv", None, "stratum", "unmapped-stratum"),
    "mapping to unknown reference stratum": (
        {"reference_map": edit("reference_map", "s4,M40", "s4,M99")},
        "reference_map.csv", 5, "ref_stratum", "unknown-code"),
    "hierarchy not nested": (
        {"areas": TINY["areas.csv"].replace("P3,Practice 3,N2,I1", "P3,Practice 3,N1,I2")},
        "areas.csv", 2, "icb", "not-nested"),
    "covariate not numeric": (
        {"covariates": edit("covariates", "P2,0.2", "P2,high")},
        "covariates.csv", 3, "imd", "not-a-number"),
    "covariates missing an area": (
        {"covariates": edit("covariates", "P3,-1\n", "")},
        "covariates.csv", None, "area", "missing-area"),
    "empty file": (
        {"reference_map": ""}, "reference_map.csv", None, None, "empty-file"),
    "header only": (
        {"adjacency": "area1,area2\n"}, "adjacency.csv", None, None, "empty-file"),
    "missing required table": (
        {"strata": None}, "strata.csv", None, None, "missing-table"),
    "no register": (
        {"register": None}, "register.csv", None, None, "missing-table"),
    "bad manifest key": (
        {"dataset": "name: tiny\nrounding: 5\n"}, "dataset.yaml", None, None, "manifest"),
    "interval lo above hi": (
        {"register": "area,lo,hi\nP1,10,5\nP2,0,3\nP3,1,2\n"},
        "register.csv", 2, "hi", "interval-order"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_rule_is_enforced(tmp_path: Path, case: str) -> None:
    replace, file, line, column, rule = CASES[case]
    errors = problems_for(tmp_path, **replace)
    matching = [p for p in errors if p.rule == rule and p.file == file]
    assert matching, f"expected a '{rule}' error in {file}, got: {[str(p) for p in errors]}"
    problem = matching[0]
    assert problem.line == line
    assert problem.column == column
    text = str(problem)
    assert file in text and rule in text
    if line is not None:
        assert f"line {line}" in text
    if column is not None:
        assert f"column '{column}'" in text


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    directory = write_tiny(tmp_path / "bad")
    (directory / "covariates.csv").write_bytes("area,imd\nP1,\xe9\n".encode("latin-1"))
    dataset, problems = validate_directory(directory)
    assert dataset is None
    assert any(p.file == "covariates.csv" and p.rule == "unreadable" for p in problems)


def test_error_lists_every_problem_and_raises(tmp_path: Path) -> None:
    directory = write_tiny(tmp_path / "bad",
                           population=edit("population", "P1,s2,100", "P1,s2,-1")
                           + "P1,s1,100\n")
    with pytest.raises(DataValidationError) as info:
        load_dataset(directory)
    rules = {p.rule for p in info.value.problems}
    assert {"negative", "duplicate"} <= rules
    assert "population.csv, line 3, column 'population'" in str(info.value)


def test_spreadsheet_output_is_accepted(tmp_path: Path) -> None:
    """UTF-8 BOM, CRLF line endings and extra columns load; extra columns are warned."""
    directory = write_tiny(tmp_path / "excel")
    pop = TINY["population.csv"].replace("area,stratum,population\n",
                                         "area,stratum,population,comment\n")
    pop = pop.replace("00\n", "00,checked\n")
    (directory / "population.csv").write_bytes(b"\xef\xbb\xbf" + pop.replace("\n", "\r\n")
                                               .encode())
    dataset, problems = validate_directory(directory)
    assert dataset is not None, [str(p) for p in problems]
    extra = [p for p in problems if p.rule == "extra-column"]
    assert [(p.file, p.column, p.severity) for p in extra] == [
        ("population.csv", "comment", "warning")]
    reference = load_dataset(write_tiny(tmp_path / "plain"))
    assert dataset.hash == reference.hash


def test_counts_become_intervals(tiny_dir: Path) -> None:
    """Rounded to 5 -> [x-2, x+2]; '*' -> [1, 7]; not-stated rows flagged; sets resolved."""
    dataset = load_dataset(tiny_dir)
    obs = dataset.observations.reset_index(drop=True)
    assert obs[["lo", "hi"]].to_numpy().tolist() == [
        [8, 12], [1, 7], [10, 14], [1, 5], [18, 22], [23, 27]]
    assert obs["censoring"].tolist() == ["rounded", "suppressed", "rounded", "rounded",
                                         "rounded", "rounded"]
    assert obs["incomplete"].tolist() == ["", "", "", "ethnicity", "", ""]
    cells = dataset.cells
    members = dataset.obs_cells.groupby("obs")["cell"].apply(
        lambda c: sorted(cells.loc[c, "stratum"] + "@" + cells.loc[c, "area"]))
    assert members[2] == ["s3@P1", "s4@P1"]  # men, any ethnicity
    assert members[3] == ["s1@P1", "s2@P1"]  # women, ethnicity not stated
    assert len(members[4]) == 4 and obs.loc[4, "population"] == 400
    matrix = dataset.observation_matrix()
    assert matrix.shape == (6, 12) and matrix.sum() == len(dataset.obs_cells)


def test_suppression_range_and_clipping_are_configurable(tmp_path: Path) -> None:
    directory = write_tiny(
        tmp_path / "custom",
        dataset="name: tiny\narea_level: practice\nsuppressed: [1, 4]\n",
        register="area,count\nP1,*\nP2,400\nP3,0\n",
        population=TINY["population.csv"].replace("P1,s1,100", "P1,s1,0")
        .replace("P1,s2,100", "P1,s2,1").replace("P1,s3,100", "P1,s3,1")
        .replace("P1,s4,100", "P1,s4,0"))
    dataset, problems = validate_directory(directory)
    assert dataset is not None, [str(p) for p in problems]
    obs = dataset.observations.reset_index(drop=True)
    assert obs.loc[0, ["lo", "hi"]].tolist() == [1, 2]  # '*' = 1..4, cut at population 2
    assert any(p.rule == "interval-clipped" for p in problems)
    assert any(p.rule == "zero-population" for p in problems)


def test_registers_by_higher_level(tmp_path: Path) -> None:
    directory = write_tiny(tmp_path / "pcn", register="area,level,count\nN1,pcn,30\nN2,pcn,0\n")
    dataset = load_dataset(directory)
    assert dataset.observations["n_cells"].tolist() == [8, 4]
    assert dataset.observations["population"].tolist() == [800, 400]


def test_parquet_tables_load_like_csv(tmp_path: Path, tiny_dir: Path) -> None:
    dataset = load_dataset(tiny_dir)
    directory = dataset.write(tmp_path / "pq", fmt="parquet")
    assert sorted(p.suffix for p in directory.glob("*.*") if p.name != "dataset.yaml") == \
        [".parquet"] * 8
    again = load_dataset(directory)
    assert again.hash == dataset.hash
    pd.testing.assert_frame_equal(again.cells, dataset.cells)


def test_dataset_is_immutable_and_hash_tracks_content(tmp_path: Path, tiny_dir: Path) -> None:
    dataset = load_dataset(tiny_dir)
    with pytest.raises(AttributeError):
        dataset.hash = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        dataset.cells["population"].to_numpy()[0] = 5
    changed = load_dataset(write_tiny(tmp_path / "changed",
                                      covariates=edit("covariates", "P2,0.2", "P2,0.3")))
    assert changed.hash != dataset.hash
    shuffled_rows = TINY["population.csv"].splitlines()
    shuffled = "\n".join([shuffled_rows[0], *reversed(shuffled_rows[1:])]) + "\n"
    reordered = load_dataset(write_tiny(tmp_path / "reordered", population=shuffled))
    assert reordered.hash == dataset.hash
    assert np.array_equal(reordered.cells["population"], dataset.cells["population"])


def test_builder_notes_survive_write_and_load(tmp_path: Path) -> None:
    from gapmodel.data import build_dataset
    from gapmodel.data.problems import ProblemLog
    from gapmodel.data.tables import read_directory

    tables, _, manifest = read_directory(write_tiny(tmp_path / "src"), ProblemLog())
    dataset = build_dataset(tables, manifest, notes=["3 practices had no list size"])
    again = load_dataset(dataset.write(tmp_path / "out"))
    assert again.notes == ["3 practices had no list size"]
    assert again.hash == dataset.hash
