"""Every shipped spec is valid and builds a model with a finite log density on its data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data_dir

from gapmodel.model import build_model
from gapmodel.sources import load_spec_data
from gapmodel.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "models").glob("*.yaml"))
DATA = shared_data_dir()


def test_specs_are_shipped_and_valid():
    names = {p.stem for p in SPECS}
    assert {"synthetic_icb", "hypertension_england_pcn", "hypertension_england_subicb",
            "dementia_england_pcn"} <= names
    for path in SPECS:
        spec = ModelSpec.from_yaml(path)
        assert spec.name == path.stem
        assert spec.sampler.name == "nutpie" and spec.sampler.draws >= 1000


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_builds_on_its_data(path: Path):
    spec = ModelSpec.from_yaml(path)
    if spec.data.kind == "england" and DATA is None:
        pytest.skip("the England data directory (../shared/data) is absent")
    if spec.data.kind == "simulate":  # a smaller scenario builds the same structure
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"areas": 40})})
    dataset, _ = load_spec_data(spec, DATA)
    model, data = build_model(dataset, spec)
    logps = model.point_logps()
    assert all(np.isfinite(v) for v in logps.values()), logps
    assert "register" in logps and data.n_cells == len(dataset.cells)


def test_spec_errors_are_explained():
    with pytest.raises(ValueError, match="nested effects need 'levels'"):
        ModelSpec.model_validate({"name": "x", "detection": {"area": {"type": "nested"}}})
    with pytest.raises(ValueError, match="collapse works for iid or nested"):
        ModelSpec.model_validate({"name": "x", "detection": {"area": {"type": "bym2",
                                                                      "collapse": True}}})
    with pytest.raises(ValueError, match="extra"):
        ModelSpec.model_validate({"name": "x", "sampler": {"chain": 4}})
