"""Uploaded datasets: validated with gapmodel's validator, stored by content hash.

    <datasets_dir>/<hash>/     the dataset as `Dataset.write` saves it (reads back to the
                               same hash); written under a temporary name, then renamed
    <datasets_dir>/.incoming/  uploads being checked (removed afterwards)
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from api.errors import ApiError
from gapmodel.data import Dataset, Problem, validate_directory

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.(csv|parquet|yaml|yml|json)$")
DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
HASH = re.compile(r"^[0-9a-f]{64}$")


def problem_dict(problem: Problem) -> dict[str, object]:
    out = problem.as_dict()
    out["row"] = problem.line - 1 if problem.line is not None else None
    return out


def check_files(names: list[str], limit: int) -> None:
    if not names:
        raise ApiError(422, "no files: send the dataset's tables as multipart 'files'")
    if len(names) > limit:
        raise ApiError(413, f"at most {limit} files per dataset")
    bad = [n for n in names if not FILE_NAME.match(Path(n).name or "")]
    if bad:
        raise ApiError(422, "file names must be table names ending .csv or .parquet "
                       "(or dataset.yaml): " + ", ".join(repr(b[:80]) for b in bad[:10]),
                       code="invalid_upload")
    stems = [Path(n).name for n in names]
    if len(set(stems)) != len(stems):
        raise ApiError(422, "a file name is given twice", code="invalid_upload")


def dataset_path(root: Path, digest: str) -> Path:
    if not HASH.match(digest):
        raise ApiError(404, f"no dataset '{digest[:80]}'")
    return root / digest


def store_upload(root: Path, files: list[tuple[str, BinaryIO]], name: str | None
                 ) -> tuple[Dataset | None, list[Problem], bool]:
    """Validate uploaded files as one dataset directory; store a valid one by hash.

    Returns (dataset or None, problems, whether it was new).
    """
    if name is not None and not DATASET_NAME.match(name):
        raise ApiError(422, "name must be a lower-case identifier", code="invalid_upload")
    incoming = root / ".incoming" / uuid.uuid4().hex
    directory = incoming / (name or "upload")
    directory.mkdir(parents=True)
    try:
        for filename, handle in files:
            with (directory / Path(filename).name).open("wb") as out:
                shutil.copyfileobj(handle, out, 1 << 20)
        dataset, problems = validate_directory(directory)
        if dataset is None:
            return None, problems, False
        final = root / dataset.hash
        if final.exists():
            return dataset, problems, False
        staged = incoming / "stored"
        dataset.write(staged)
        try:
            staged.rename(final)
        except OSError:  # stored meanwhile by another request
            if not final.exists():
                raise
            return dataset, problems, False
        return dataset, problems, True
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
