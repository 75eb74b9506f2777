"""The notebooks run top to bottom (tiny draws, small sizes, a temporary registry)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from conftest import shared_data_dir
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = {"GAPMODEL_NB_DRAWS": "30", "GAPMODEL_NB_TUNE": "30", "GAPMODEL_NB_CHAINS": "2",
        "GAPMODEL_NB_AREAS": "20", "GAPMODEL_NB_PROGRESS": "0",
        "GAPMODEL_NB_FORCE_PROMOTE": "1"}


def run_notebook(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 **env: str) -> nbformat.NotebookNode:
    """Execute a notebook in its own directory; the kernel inherits the environment."""
    settings = {**TINY, "GAPMODEL_REGISTRY": str(tmp_path / "registry"),
                "GAPMODEL_NB_OUT": str(tmp_path / "out"), **env}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return book


def text_outputs(book: nbformat.NotebookNode) -> str:
    parts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebooks_are_stored_without_outputs(name: str):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, name


@pytest.mark.slow
def test_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    book = run_notebook("01_quickstart.ipynb", tmp_path, monkeypatch)
    assert (tmp_path / "out" / "quickstart_report" / "index.html").exists()
    assert len(list((tmp_path / "registry" / "synthetic_icb").glob("*/meta.json"))) == 1
    assert "FAILED" in text_outputs(book)  # 2 x 30 draws cannot pass the gate


@pytest.mark.slow
def test_recalibrate_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    book = run_notebook("03_recalibrate_compare.ipynb", tmp_path, monkeypatch)
    versions = list((tmp_path / "registry" / "synthetic_icb").glob("*/meta.json"))
    assert len(versions) == 2
    assert (tmp_path / "registry" / "synthetic_icb" / "ACTIVE").exists()
    assert "elpd" in text_outputs(book)


@pytest.mark.slow
@pytest.mark.realdata
def test_england_hypertension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = shared_data_dir()
    if data is None:
        pytest.skip("the England data directory is absent (GAPMODEL_DATA_DIR or ../shared/data)")
    # each draw of the Laplace-collapsed England model costs seconds until adapted
    run_notebook("02_england_hypertension.ipynb", tmp_path, monkeypatch,
                 GAPMODEL_DATA_DIR=str(data), GAPMODEL_NB_DRAWS="5", GAPMODEL_NB_TUNE="5")
    assert (tmp_path / "out" / "england_hypertension_report" / "index.html").exists()
    assert os.listdir(tmp_path / "registry" / "hypertension_england_pcn")
