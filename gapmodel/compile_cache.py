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

`GAPMODEL_COMPILE_SEED` names a folder compiled elsewhere, as the image's build does on
stand-ins of each spec's data (`gapmodel compile SPEC --stand-in`): its files for the
installed versions that the cache lacks are copied in. A volume keeps its contents across
images, so an image's code must reach it this way, not by being built into the volume.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

ENV_VAR = "GAPMODEL_COMPILE_CACHE"
SEED_VAR = "GAPMODEL_COMPILE_SEED"
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
    if env.get(SEED_VAR):
        seed(folder, cache_folder(env[SEED_VAR]))
    return folder


def seed(folder: Path, source: Path) -> int:
    """Copy into `folder` every file under `source` that it lacks (the same relative path),
    each written under a temporary name and renamed, so that processes starting together
    never read half a file; returns how many were copied. Files `folder` has are kept:
    numba reads an index and its entries together, and both came from one compilation."""
    copied = 0
    for path in source.rglob("*") if source.is_dir() else ():
        target = folder / path.relative_to(source)
        if not path.is_file() or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.copyfile(path, partial)
        os.replace(partial, target)
        copied += 1
    return copied
