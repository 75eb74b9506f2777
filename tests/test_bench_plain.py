"""bench/plain.py: the spec's model written plainly, for the benchmarks' comparison rows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from bench_support import load_bench

from gapmodel.model import build_model
from gapmodel.sources import load_spec_data
from gapmodel.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plain():
    return load_bench("plain")


def _data_dir() -> Path | None:
    env = os.environ.get("GAPMODEL_DATA_DIR")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if (path / "qof_2022_23_prevalence_by_practice_all_registers.csv").is_file() \
        else None


def test_a_spec_it_cannot_write_out_is_refused_with_the_reasons(plain):
    spec = ModelSpec.from_yaml(ROOT / "models" / "synthetic_icb.yaml")
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"areas": 12})})
    dataset, _ = load_spec_data(spec)
    with pytest.raises(plain.Unsupported, match=r"bym2 area effect.*recording completeness"):
        plain.plain_model(dataset, spec)


@pytest.mark.realdata
@pytest.mark.skipif(_data_dir() is None, reason="England data not found")
def test_england_by_pcn_has_the_products_hyperparameters_sampled_plainly(plain):
    """Hypertension by PCN: every PCN's detection effect is a sampled, centred variable
    (the product integrates them out), the gate's hyperparameters are the product's, and
    the density is finite where sampling starts."""
    from gapmodel.model import HYPERPARAMETERS

    spec = ModelSpec.from_yaml(ROOT / "models" / "hypertension_england_pcn.yaml")
    dataset, _ = load_spec_data(spec, str(_data_dir()))
    model = plain.plain_model(dataset, spec)
    product, data = build_model(dataset, spec)

    def gate(m) -> set[str]:  # as gapmodel.fit.monitored chooses them
        names = [v.name for v in m.free_RVs + m.deterministics]
        return {n for n in names if any(n == h or n.startswith(h + "_")
                                               for h in HYPERPARAMETERS)
                and not n.startswith("z_") and not n.endswith("_sheared")}

    assert gate(model) == gate(product)
    assert {"alpha", "gamma0", "sigma_u", "sigma_level_sub_icb"} <= gate(model)
    free = {rv.name: rv for rv in model.free_RVs}
    assert "u" in free and "u" not in {rv.name for rv in product.free_RVs}  # collapsed there
    assert model.initial_point()["u"].shape == (len(data.areas),)
    assert not any(name.startswith(("anchor_", "z_")) or name.endswith("_sheared")
                   for name in free)
    assert np.isfinite(model.compile_logp()(model.initial_point()))
