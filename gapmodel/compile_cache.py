"""Where compiled model functions are kept between processes.

A fit's log density and gradient are compiled by PyTensor's numba backend: on England by
PCN 50 s from empty caches, 13 s for new data once the graph's operations are cached
(docs/performance.md, "Compiled functions kept"). The caches live in PyTensor's
`base_compiledir` (numba's functions for PyTensor graphs under its `numba` folder) and,
for the library's own numba functions, in `NUMBA_CACHE_DIR`.

`GAPMODEL_COMPILE_CACHE` names a folder that outlives the process, such as the service's
data volume: both caches then go to a subfolder named by the versions of PyTensor, numba
and llvmlite. PyTensor's numba cache is keyed by graphs, not by its own release, so a
cache written by other versions must never be read; a new image starts a new subfolder.
An explicit `base_compiledir` in `PYTENSOR_FLAGS`, or `NUMBA_CACHE_DIR`, is left alone.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

ENV_VAR = "GAPMODEL_COMPILE_CACHE"
PACKAGES = ("pytensor", "numba", "llvmlite")


def cache_folder(root: str | Path) -> Path:
    """The subfolder of `root` for the installed compilers' versions."""
    return Path(root) / "-".join(f"{name}-{metadata.version(name)}" for name in PACKAGES)


def configure(environ: dict[str, str] | None = None) -> Path | None:
    """Point PyTensor's and numba's caches into `GAPMODEL_COMPILE_CACHE` (read from
    `environ`, os.environ by default) where it is set; returns the folder, or None where
    it is not set or PyTensor was imported first (its configuration is read then)."""
    env = os.environ if environ is None else environ
    root = env.get(ENV_VAR)
    if not root or "pytensor" in sys.modules:
        return None
    folder = cache_folder(root)
    flags = env.get("PYTENSOR_FLAGS", "")
    if "base_compiledir" not in flags:
        env["PYTENSOR_FLAGS"] = ",".join(filter(None, [flags, f"base_compiledir={folder}"]))
    env.setdefault("NUMBA_CACHE_DIR", str(folder / "library"))
    return folder
