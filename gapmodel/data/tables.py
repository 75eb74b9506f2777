"""Reading and writing the table files of a dataset directory (CSV or Parquet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gapmodel.data.problems import ProblemLog

SUFFIXES = (".csv", ".parquet")
MANIFEST = "dataset.yaml"
NOTES = "notes.json"  # harmonisation notes of the builder that made the dataset
TABLES = ("strata", "areas", "population", "reference", "reference_map", "covariates",
          "adjacency")
REGISTER_PREFIX = "register"


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as stripped text; missing values become empty strings."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        text = values.astype(object).where(values.notna(), "")
        out[str(column).strip()] = [_cell_text(v) for v in text]
    return out


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_table(path: Path, log: ProblemLog) -> pd.DataFrame | None:
    """Read one table as text, or log why it cannot be read and return None."""
    name = path.name
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                                encoding="utf-8-sig", skipinitialspace=False)
    except pd.errors.EmptyDataError:
        log.error(name, "empty-file", "the file is empty (no header row)")
        return None
    except UnicodeDecodeError as exc:
        log.error(name, "unreadable", f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        return None
    except Exception as exc:  # any parser failure is the file's fault, never ours
        log.error(name, "unreadable", f"cannot be read as {path.suffix[1:]}: {exc}")
        return None
    if frame.shape[1] == 0:
        log.error(name, "empty-file", "the file has no columns")
        return None
    if len(frame) == 0:
        log.error(name, "empty-file", "the file has a header but no rows")
        return None
    return _as_text(frame)


def read_manifest(directory: Path, log: ProblemLog) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.exists():
        return {}
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        log.error(MANIFEST, "unreadable", f"not valid YAML: {exc}")
        return {}
    if content is None:
        return {}
    if not isinstance(content, dict):
        log.error(MANIFEST, "manifest", "must be a mapping of keys to values")
        return {}
    return content


def find_tables(directory: Path, log: ProblemLog) -> dict[str, Path]:
    """Map table names to files; registers are every file whose stem starts 'register'."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix not in SUFFIXES:
            continue
        stem = path.stem
        if stem in found:
            log.error(path.name, "duplicate-table",
                      f"table '{stem}' is given twice ({found[stem].name} and {path.name})")
            continue
        if stem in TABLES or stem.startswith(REGISTER_PREFIX):
            found[stem] = path
        else:
            log.warning(path.name, "unknown-table", "not a table of the dataset format; ignored")
    return found


def read_directory(directory: Path, log: ProblemLog) -> tuple[dict[str, pd.DataFrame],
                                                              dict[str, str], dict[str, Any]]:
    """Read every table of a dataset directory: (tables, file names, manifest)."""
    if not directory.is_dir():
        log.error(str(directory), "not-a-directory", "dataset path is not a directory")
        return {}, {}, {}
    manifest = read_manifest(directory, log)
    tables: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {}
    for stem, path in find_tables(directory, log).items():
        files[stem] = path.name
        frame = read_table(path, log)
        if frame is not None:
            tables[stem] = frame
    return tables, files, manifest


def read_notes(directory: Path, log: ProblemLog) -> list[str]:
    path = directory / NOTES
    if not path.exists():
        return []
    try:
        notes = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.error(NOTES, "unreadable", f"not valid JSON: {exc}")
        return []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        log.error(NOTES, "notes", "must be a JSON list of strings")
        return []
    return notes


def write_table(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, lineterminator="\n")


def write_manifest(manifest: dict[str, Any], directory: Path) -> None:
    text = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    (directory / MANIFEST).write_text(text, encoding="utf-8")
