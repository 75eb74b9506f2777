"""The registry of fitted versions: immutable artefacts on disk, an atomic active pointer.

    <root>/<model>/<version>/   spec.yaml, meta.json, diagnostics.csv, cells.parquet,
                                draws.npz (float32 cell draws), posterior.nc (ArviZ),
                                covariates.parquet (raw area covariates, when the
                                dataset has any; older versions lack it)
    <root>/<model>/ACTIVE       the active version id (replaced atomically)
    <root>/<model>/history.jsonl  promotions and rollbacks, with reasons

A version directory is written under a temporary name and renamed into place, so a
reader never sees half a version; meta.json records a SHA-256 per file and loading
refuses a version whose files do not match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gapmodel.data import Dataset
from gapmodel.fit import DERIVED, CellDraws, FitResult
from gapmodel.spec import ModelSpec

if TYPE_CHECKING:
    import xarray as xr

DEFAULT_ROOT = Path("models/registry")
PACKAGES = ("gapmodel", "pymc", "pytensor", "arviz", "nutpie", "numpy", "pandas", "xarray")


class RegistryError(RuntimeError):
    """A version that is missing, corrupt, or may not be promoted."""


def registry_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("GAPMODEL_REGISTRY") or DEFAULT_ROOT)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Version:
    """A loaded, verified version: metadata, cell labels, cell draws and, when saved,
    the raw area covariates (indexed by area)."""

    path: Path
    meta: dict[str, Any]
    cells: pd.DataFrame
    draws: CellDraws
    covariates: pd.DataFrame | None = None

    @property
    def id(self) -> str:
        return self.meta["version"]

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.model_validate(self.meta["spec"])

    def diagnostics(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "diagnostics.csv", index_col=0)

    def posterior(self):
        """The full ArviZ DataTree (lazily read from netCDF)."""
        import xarray as xr

        return xr.open_datatree(self.path / "posterior.nc", engine="h5netcdf")


class Registry:
    """Versions of every model under one root directory."""

    def __init__(self, root: str | Path | None = None):
        self.root = registry_root(root)

    # -- writing --------------------------------------------------------------------------

    def save(self, result: FitResult, dataset: Dataset, *, save_posterior: bool = True) -> str:
        """Write a fit as a new immutable version; returns its id."""
        spec = result.spec
        created = _now()
        stamp = dt.datetime.fromisoformat(created).strftime("%Y%m%dT%H%M%S")
        version_id = f"{stamp}-{uuid.uuid4().hex[:8]}"
        model_dir = self.root / spec.name
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = model_dir / f".{version_id}.tmp"
        tmp.mkdir()
        try:
            (tmp / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
            result.diagnostics.to_csv(tmp / "diagnostics.csv")
            dataset.cells.to_parquet(tmp / "cells.parquet", index=False)
            if dataset.covariates.shape[1]:
                dataset.covariates.reset_index().to_parquet(tmp / "covariates.parquet",
                                                            index=False)
            np.savez(tmp / "draws.npz", **{k: getattr(result.draws, k) for k in DERIVED})
            if save_posterior:
                result.idata.to_netcdf(tmp / "posterior.nc", engine="h5netcdf")
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
            meta = {
                "version": version_id,
                "model": spec.name,
                "condition": spec.condition,
                "created": created,
                "method": result.method,
                "start": result.start,
                "dataset": {"hash": dataset.hash, "name": dataset.name,
                            "summary": dataset.summary()},
                "spec": spec.model_dump(mode="json"),
                "packages": package_versions(),
                "gate": result.gate,
                "timings": result.timings,
                "derived_draws": result.draws.n_draws,
                "files": files,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            tmp.rename(model_dir / version_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version_id

    # -- reading --------------------------------------------------------------------------

    def models(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def versions(self, model: str | None = None) -> list[dict[str, Any]]:
        """Metadata of every version (newest last), with an `active` flag."""
        out = []
        for name in [model] if model else self.models():
            model_dir = self.root / name
            if not model_dir.is_dir():
                continue
            active = self.active_id(name)
            for path in sorted(model_dir.iterdir()):
                meta_path = path / "meta.json"
                if path.name.startswith(".") or not meta_path.exists():
                    continue
                meta = json.loads(meta_path.read_text())
                meta["active"] = meta["version"] == active
                out.append(meta)
        return sorted(out, key=lambda m: m["created"])

    def find(self, version_id: str) -> Path:
        for name in self.models():
            path = self.root / name / version_id
            if (path / "meta.json").exists():
                return path
        raise RegistryError(f"no version '{version_id}' in {self.root}")

    def load(self, version_id: str) -> Version:
        """Load and verify a version; refuse one whose files do not match their hashes."""
        path = self.find(version_id)
        meta = json.loads((path / "meta.json").read_text())
        for name, expected in meta["files"].items():
            file = path / name
            if not file.exists() or _sha256(file) != expected:
                raise RegistryError(f"version {version_id}: {name} does not match its recorded "
                                    "content hash; refusing to load a corrupted artefact")
        with np.load(path / "draws.npz") as arrays:
            draws = CellDraws(*(arrays[k] for k in DERIVED))
        cells = pd.read_parquet(path / "cells.parquet")
        covariates = None
        if "covariates.parquet" in meta["files"]:
            covariates = pd.read_parquet(path / "covariates.parquet").set_index("area")
        return Version(path=path, meta=meta, cells=cells, draws=draws, covariates=covariates)

    # -- the active pointer ---------------------------------------------------------------

    def active_id(self, model: str) -> str | None:
        pointer = self.root / model / "ACTIVE"
        return pointer.read_text().strip() or None if pointer.exists() else None

    def active(self, model: str) -> Version:
        version_id = self.active_id(model)
        if version_id is None:
            raise RegistryError(f"model '{model}' has no active version")
        return self.load(version_id)

    def start_from(self, spec: ModelSpec) -> tuple[str, xr.Dataset] | None:
        """What a fit of `spec` warm-starts from: the id and posterior of the model's active
        version, where the spec has warm-start settings and that version kept its
        posterior; otherwise None (a cold start)."""
        if spec.sampler.warm_start is None:
            return None
        try:
            version = self.active(spec.name)
            return version.id, version.posterior()["posterior"].to_dataset()
        except (RegistryError, OSError):
            return None

    def promote(self, version_id: str, *, force: bool = False, reason: str = "") -> None:
        """Make a version active: only gate-passing exact fits, unless forced with a reason."""
        version = self.load(version_id)
        meta = version.meta
        if meta["method"] != "nuts":
            raise RegistryError(f"version {version_id} is an approximate fit "
                                f"({meta['method']}): never promotable")
        if not meta["gate"]["passed"]:
            if not force:
                failures = "; ".join(meta["gate"]["failures"])
                raise RegistryError(f"version {version_id} failed the convergence gate "
                                    f"({failures}); use force with a reason to promote anyway")
            if not reason.strip():
                raise RegistryError("a forced promotion needs a reason, which is recorded")
        model = meta["model"]
        previous = self.active_id(model)
        self._write_pointer(model, version_id)
        self._log(model, {"action": "promote", "version": version_id, "previous": previous,
                          "forced": bool(force and not meta["gate"]["passed"]),
                          "reason": reason, "at": _now()})

    def rollback(self, model: str) -> str:
        """Re-activate the version that was active before the current one."""
        current = self.active_id(model)
        history = [e for e in self.history(model) if e["action"] == "promote"]
        for event in reversed(history):
            if event["version"] == current and event.get("previous"):
                target = event["previous"]
                self.load(target)  # verify before switching
                self._write_pointer(model, target)
                self._log(model, {"action": "rollback", "version": target,
                                  "previous": current, "at": _now()})
                return target
        raise RegistryError(f"model '{model}' has no earlier active version to roll back to")

    def history(self, model: str) -> list[dict[str, Any]]:
        path = self.root / model / "history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _write_pointer(self, model: str, version_id: str) -> None:
        pointer = self.root / model / "ACTIVE"
        tmp = pointer.with_name(f".ACTIVE.{os.getpid()}.tmp")
        with tmp.open("w") as handle:
            handle.write(version_id)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, pointer)

    def _log(self, model: str, event: dict[str, Any]) -> None:
        with (self.root / model / "history.jsonl").open("a") as handle:
            handle.write(json.dumps(event) + "\n")
