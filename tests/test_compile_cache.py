"""`GAPMODEL_COMPILE_CACHE`: compiled functions kept in a folder named by the compilers'
versions, so that a cache written by other versions is never read."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from gapmodel import compile_cache


def test_unset_changes_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "pytensor", raising=False)
    env = {"PYTENSOR_FLAGS": "floatX=float64"}
    assert compile_cache.configure(env) is None
    assert env == {"PYTENSOR_FLAGS": "floatX=float64"}


def test_folder_named_by_the_compilers_versions(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "pytensor", raising=False)
    env = {compile_cache.ENV_VAR: str(tmp_path), "PYTENSOR_FLAGS": "floatX=float64"}
    folder = compile_cache.configure(env)
    assert folder.parent == tmp_path
    for name in compile_cache.PACKAGES:
        assert f"{name}-{metadata.version(name)}" in folder.name
    assert env["PYTENSOR_FLAGS"] == f"floatX=float64,base_compiledir={folder}"
    assert env["NUMBA_CACHE_DIR"] == str(folder / "library")


def test_explicit_settings_are_left_alone(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "pytensor", raising=False)
    env = {compile_cache.ENV_VAR: str(tmp_path), "PYTENSOR_FLAGS": "base_compiledir=/x",
           "NUMBA_CACHE_DIR": "/y"}
    compile_cache.configure(env)
    assert env["PYTENSOR_FLAGS"] == "base_compiledir=/x" and env["NUMBA_CACHE_DIR"] == "/y"


def test_too_late_once_pytensor_is_imported(tmp_path):
    import pytensor  # noqa: F401  (the test session imports it anyway)

    env = {compile_cache.ENV_VAR: str(tmp_path)}
    assert compile_cache.configure(env) is None and "PYTENSOR_FLAGS" not in env


def test_a_process_importing_gapmodel_compiles_into_it(tmp_path):
    """PyTensor, imported after gapmodel, reads the folder; its numba cache lies inside."""
    code = ("import gapmodel, pytensor\n"
            "from pytensor.link.numba.cache import NUMBA_CACHE_PATH\n"
            "print(pytensor.config.base_compiledir)\nprint(NUMBA_CACHE_PATH)\n")
    env = {"PATH": "/usr/bin:/bin", compile_cache.ENV_VAR: str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    folder = compile_cache.cache_folder(tmp_path)
    assert out == [str(folder), str(folder / "numba")]
    assert (folder / "numba").is_dir()


def test_seed_fills_what_the_cache_lacks(monkeypatch, tmp_path):
    """A folder compiled elsewhere (the image's build) is copied into the versions' folder:
    files it lacks, nested as they were; files it has are kept."""
    monkeypatch.delitem(sys.modules, "pytensor", raising=False)
    shipped = compile_cache.cache_folder(tmp_path / "image")
    (shipped / "numba").mkdir(parents=True)
    (shipped / "numba" / "op.nbi").write_text("image index")
    (shipped / "numba" / "op.1.nbc").write_text("image code")
    (shipped / "library").mkdir()
    (shipped / "library" / "kernel.nbi").write_text("image kernel")
    env = {compile_cache.ENV_VAR: str(tmp_path / "volume"),
           compile_cache.SEED_VAR: str(tmp_path / "image")}
    folder = compile_cache.cache_folder(tmp_path / "volume")
    (folder / "library").mkdir(parents=True)
    (folder / "library" / "kernel.nbi").write_text("compiled here")
    assert compile_cache.configure(env) == folder
    assert (folder / "numba" / "op.nbi").read_text() == "image index"
    assert (folder / "numba" / "op.1.nbc").read_text() == "image code"
    assert (folder / "library" / "kernel.nbi").read_text() == "compiled here"
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [
        "kernel.nbi", "op.1.nbc", "op.nbi"]
    assert compile_cache.seed(folder, shipped) == 0  # the next process copies nothing
    assert compile_cache.seed(folder, tmp_path / "nowhere") == 0
