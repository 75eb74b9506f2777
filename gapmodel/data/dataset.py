"""The validated, immutable Dataset: cells, observations over sets of cells, evidence."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gapmodel.data.manifest import Manifest
from gapmodel.data.problems import Problem
from gapmodel.data.tables import NOTES, write_manifest, write_table


def _frozen(frame: pd.DataFrame) -> pd.DataFrame:
    """A private copy whose arrays refuse writes."""
    frame = frame.copy(deep=True)
    for column in frame.columns:
        values = frame[column].to_numpy()
        if isinstance(values, np.ndarray):
            values.flags.writeable = False
    return frame


@dataclass(frozen=True, eq=False)
class Dataset:
    """Everything the model needs, validated once. Never modify it: build a new one.

    * ``cells``: one row per (area, stratum) with ``population``, the stratum's attributes
      and the area's hierarchy, in canonical order (areas order, then strata order);
    * ``observations``: one row per register count, with its censoring interval
      ``[lo, hi]``, ``censoring`` (exact, rounded, suppressed, interval) and
      ``incomplete`` (the attribute it leaves unrecorded, e.g. ethnicity, else empty);
    * ``obs_cells``: (obs, cell) pairs, the sparse map from observations to their cells;
    * ``reference`` / ``reference_map``: evidence by reference stratum and the mapping;
    * ``covariates`` (indexed by area, areas order) and ``adjacency`` (edges, once each).
    """

    manifest: Manifest
    areas: pd.DataFrame
    levels: tuple[str, ...]
    strata: pd.DataFrame
    attributes: tuple[str, ...]
    cells: pd.DataFrame
    observations: pd.DataFrame
    obs_cells: pd.DataFrame
    reference: pd.DataFrame
    reference_map: pd.DataFrame
    covariates: pd.DataFrame
    adjacency: pd.DataFrame
    registers: dict[str, pd.DataFrame]
    report: tuple[Problem, ...] = ()
    hash: str = field(default="")

    @classmethod
    def create(cls, **parts: Any) -> Dataset:
        frames = {k: _frozen(v) if isinstance(v, pd.DataFrame) else v for k, v in parts.items()}
        frames["registers"] = {k: _frozen(v) for k, v in parts["registers"].items()}
        dataset = cls(**frames)
        object.__setattr__(dataset, "hash", dataset._content_hash())
        return dataset

    # -- identity -------------------------------------------------------------------------

    @property
    def notes(self) -> list[str]:
        """Harmonisation notes from the builder that made the dataset."""
        return [p.message for p in self.report if p.rule == "harmonisation"]

    @property
    def name(self) -> str:
        return self.manifest.name

    def canonical_tables(self) -> dict[str, pd.DataFrame]:
        """The dataset in the file schema, in canonical order: what `write` saves."""
        tables: dict[str, pd.DataFrame] = {
            "strata": self.strata,
            "areas": self.areas,
            "population": self.cells[["area", "stratum", "population"]],
            "reference": self._reference_table(),
            "reference_map": self.reference_map,
        }
        if self.covariates.shape[1]:
            tables["covariates"] = self.covariates.reset_index()
        if len(self.adjacency):
            tables["adjacency"] = self.adjacency[["area1", "area2"]]
        tables.update(self.registers)
        return tables

    def _reference_table(self) -> pd.DataFrame:
        ref = self.reference
        out = pd.DataFrame({"ref_stratum": ref["ref_stratum"], "measure": ref["measure"]})
        counts = ref["kind"] == "counts"
        for column in ("y", "n", "design_effect", "rate", "lower", "upper"):
            values = ref[column]
            if column in ("y", "n"):
                text = values.map(lambda v: "" if pd.isna(v) else str(int(v)))
            else:
                text = values.map(lambda v: "" if pd.isna(v) else repr(float(v)))
            keep = counts if column in ("y", "n", "design_effect") else ~counts
            out[column] = text.where(keep, "")
        out["source"] = ref["source"]
        return out

    def _content_hash(self) -> str:
        digest = hashlib.sha256()
        digest.update(repr(sorted(self.manifest.to_yaml_dict().items())).encode())
        for name, table in sorted(self.canonical_tables().items()):
            digest.update(name.encode())
            digest.update(table.to_csv(index=False, lineterminator="\n").encode())
        return digest.hexdigest()

    # -- model inputs ---------------------------------------------------------------------

    def observation_matrix(self) -> sp.csr_matrix:
        """Sparse 0/1 matrix, observations x cells."""
        shape = (len(self.observations), len(self.cells))
        rows = self.obs_cells["obs"].to_numpy()
        cols = self.obs_cells["cell"].to_numpy()
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)

    def area_index(self) -> pd.Index:
        return pd.Index(self.areas["area"], name="area")

    # -- output ---------------------------------------------------------------------------

    def write(self, directory: str | Path, fmt: Literal["csv", "parquet"] = "csv") -> Path:
        """Write the dataset as a directory that `load_dataset` reads back identically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_manifest(self.manifest.to_yaml_dict(), directory)
        if self.notes:
            (directory / NOTES).write_text(json.dumps(self.notes, indent=1), encoding="utf-8")
        for name, table in self.canonical_tables().items():
            write_table(table.astype(str) if fmt == "parquet" else table,
                        directory / f"{name}.{fmt}")
        return directory

    def summary(self) -> dict[str, Any]:
        obs = self.observations
        return {
            "name": self.name,
            "condition": self.manifest.condition,
            "hash": self.hash,
            "areas": len(self.areas),
            "levels": {lvl: int(self.areas[lvl].nunique()) if lvl in self.areas else
                       len(self.areas) for lvl in self.levels},
            "strata": len(self.strata),
            "attributes": {a: sorted(self.strata[a].unique()) for a in self.attributes},
            "cells": len(self.cells),
            "population": int(self.cells["population"].sum()),
            "observations": len(obs),
            "registers": {k: int((obs["register"] == k).sum()) for k in self.registers},
            "censoring": {str(k): int(v) for k, v in obs["censoring"].value_counts().items()},
            "not_stated_observations": int((obs["incomplete"] != "").sum()),
            "recorded_range": [int(obs["lo"].sum()), int(obs["hi"].sum())],
            "reference_rows": len(self.reference),
            "covariates": list(self.covariates.columns),
            "adjacency_edges": len(self.adjacency),
            "warnings": sum(p.severity == "warning" for p in self.report),
        }
