"""A small real fit end to end: diagnostics, gate, derived draws, registry round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny
from typer.testing import CliRunner

from gapmodel.cli import app
from gapmodel.data import load_dataset
from gapmodel.fit import FitResult, fit
from gapmodel.registry import Registry, RegistryError
from gapmodel.spec import ModelSpec
from gapmodel.summary import fit_summary, totals

TINY_SPEC = {
    "name": "tiny",
    "condition": "test",
    "data": {"kind": "directory", "path": "unused"},
    "detection": {"groups": {"sex": {"type": "free", "pooled": False}},
                  "area": {"type": "iid", "centered": False}},
    "missing": {},
    "sampler": {"chains": 2, "tune": 150, "draws": 150, "seed": 3},
    "derived_draws": 100,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple:
    dataset = load_dataset(write_tiny(tmp_path_factory.mktemp("data") / "tiny"))
    spec = ModelSpec.model_validate(TINY_SPEC)
    return dataset, spec, fit(dataset, spec, progress=False)


def test_fit_produces_diagnostics_gate_and_draws(tiny):
    dataset, _, result = tiny
    assert isinstance(result, FitResult)
    table = result.diagnostics
    for column in ("mean", "sd", "q5", "q50", "q95", "r_hat", "ess_bulk", "ess_tail"):
        assert column in table.columns
    assert {"gamma0", "sigma_u", "mu_rho", "total_undiagnosed"} <= set(table.index)
    checks = result.gate["checks"]
    assert set(checks) == {"rhat", "ess_bulk", "ess_tail", "divergences", "ebfmi"}
    # 2 x 150 draws cannot reach ESS 400: the gate must say so
    assert not result.passed
    assert any("ESS" in f.upper() for f in result.gate["failures"])
    draws = result.draws
    assert draws.expected.shape == (100, len(dataset.cells))
    assert draws.expected.dtype == np.float32
    np.testing.assert_allclose(draws.expected, draws.recorded + draws.undiagnosed, rtol=1e-5)
    assert (draws.undiagnosed >= 0).all()
    # recorded shares the registers' counts: per draw they add up to the midpoints
    obs = dataset.observations
    midpoint = ((obs["lo"] + obs["hi"]) / 2).sum()
    np.testing.assert_allclose(draws.recorded.sum(axis=1), midpoint, rtol=1e-4)
    q = draws.yield_per_contact()
    assert ((q > 0) & (q < 1)).all()


def test_the_posterior_holds_every_deterministic_at_every_draw(tiny):
    """The sampler keeps the free variables only; the derive step adds the model's
    deterministics, with their dims and coordinates, and each draw's value is the model's
    own at that draw."""
    from gapmodel.model import build_model

    dataset, spec, result = tiny
    model, _ = build_model(dataset, spec)
    posterior = result.idata.posterior
    names = [v.name for v in model.deterministics if v.name not in ("pi", "theta")]
    assert names and set(names) <= set(posterior.data_vars)
    for name in names:
        assert posterior[name].dims[2:] == tuple(model.named_vars_to_dims.get(name) or ())
    assert list(posterior["alpha"].coords["ref_stratum"].values) == \
        list(model.coords["ref_stratum"])
    free = [rv.name for rv in model.free_RVs]
    at = model.compile_fn([model[n] for n in names], inputs=model.free_RVs,
                          on_unused_input="ignore")
    for chain, draw in [(0, 0), (1, 77), (1, 149)]:
        point = {n: posterior[n].values[chain, draw] for n in free}
        for name, value in zip(names, at(point), strict=True):
            np.testing.assert_allclose(posterior[name].values[chain, draw], value,
                                       rtol=1e-12, err_msg=name)



def test_kept_cell_draws_are_the_thinned_draws_across_chunks(tiny):
    """The derive step keeps evenly thinned draws, chunk by chunk: each kept row is its
    posterior draw's (pi, and the undiagnosed summing to that draw's national total),
    whatever the chunks' boundaries."""
    from gapmodel.fit import CellProbabilities, _derive_all
    from gapmodel.model import build_model

    dataset, spec, result = tiny
    model, data = build_model(dataset, spec)
    posterior = result.idata.posterior.to_dataset()
    total, draws, _ = _derive_all(model, data, posterior, keep=40, seed=5, chunk=7)
    flat = np.unique(np.linspace(0, total.size - 1, 40).round().astype(int))
    assert draws.pi.shape == (len(flat), data.n_cells)
    pi = CellProbabilities(model, data).evaluate(posterior)["pi"]
    np.testing.assert_allclose(draws.pi, pi[flat].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(draws.undiagnosed.sum(axis=1, dtype=np.float64),
                               total.ravel()[flat], rtol=1e-6)


def test_derive_step_draws_do_not_depend_on_its_threads(tiny):
    """Each chunk of draws has its own generator, so one thread or three give the same cell
    draws, national totals and deterministics, to the bit."""
    from gapmodel.fit import _derive_all
    from gapmodel.model import build_model

    dataset, spec, result = tiny
    model, data = build_model(dataset, spec)
    posterior = result.idata.posterior.to_dataset()
    one = _derive_all(model, data, posterior, keep=40, seed=5, chunk=7, workers=1)
    three = _derive_all(model, data, posterior, keep=40, seed=5, chunk=7, workers=3)
    np.testing.assert_array_equal(one[0], three[0])
    for name in ("recorded", "undiagnosed", "pi", "theta"):
        np.testing.assert_array_equal(getattr(one[1], name), getattr(three[1], name))
    assert one[2].identical(three[2])


def test_summary_has_totals_with_intervals(tiny):
    _, _, result = tiny
    summary = fit_summary(result)
    t = summary["totals"]["undiagnosed"]
    assert t["lower"] <= t["median"] <= t["upper"] and t["prob"] == 0.9
    assert summary["parameters"]["gamma0"]["q5"] < summary["parameters"]["gamma0"]["q95"]
    assert any("sigma_eps" in note for note in summary["assumptions"])


def test_save_load_summarise_round_trip(tiny, tmp_path: Path):
    dataset, spec, result = tiny
    store = Registry(tmp_path / "registry")
    version = store.save(result, dataset)
    loaded = store.load(version)
    assert loaded.meta["dataset"]["hash"] == dataset.hash
    assert loaded.meta["start"] == {"kind": "cold"}
    assert loaded.spec == spec
    assert loaded.meta["packages"]["pymc"].startswith("6.")
    np.testing.assert_array_equal(loaded.draws.undiagnosed, result.draws.undiagnosed)
    assert totals(loaded.draws) == totals(result.draws)
    assert list(loaded.cells["area"]) == list(dataset.cells["area"])
    posterior = loaded.posterior()
    assert "gamma0" in posterior.posterior
    assert loaded.diagnostics().loc["gamma0", "r_hat"] == pytest.approx(
        result.diagnostics.loc["gamma0", "r_hat"])


def test_corrupted_version_is_refused(tiny, tmp_path: Path):
    dataset, _, result = tiny
    store = Registry(tmp_path / "registry")
    version = store.save(result, dataset, save_posterior=False)
    path = store.find(version) / "draws.npz"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(RegistryError, match="content hash"):
        store.load(version)


def test_promotion_rules_and_rollback(tiny, tmp_path: Path):
    dataset, _, result = tiny
    store = Registry(tmp_path / "registry")
    first = store.save(result, dataset, save_posterior=False)
    with pytest.raises(RegistryError, match="failed the convergence gate"):
        store.promote(first)
    with pytest.raises(RegistryError, match="reason"):
        store.promote(first, force=True)
    assert store.active_id("tiny") is None
    store.promote(first, force=True, reason="test of forced promotion")
    assert store.active_id("tiny") == first
    passing = FitResult(**{**result.__dict__, "gate": {**result.gate, "passed": True,
                                                       "failures": []}})
    second = store.save(passing, dataset, save_posterior=False)
    store.promote(second)
    assert store.active("tiny").id == second
    assert store.rollback("tiny") == first
    assert store.active_id("tiny") == first
    events = [e["action"] for e in store.history("tiny")]
    assert events == ["promote", "promote", "rollback"]
    assert store.history("tiny")[0]["forced"] is True
    approximate = FitResult(**{**passing.__dict__, "method": "advi"})
    third = store.save(approximate, dataset, save_posterior=False)
    with pytest.raises(RegistryError, match="approximate"):
        store.promote(third, force=True, reason="no")
    listed = store.versions("tiny")
    assert [m["version"] for m in listed] == [first, second, third]
    assert [m["active"] for m in listed] == [True, False, False]


def test_cli_fit_writes_json_and_a_version(tmp_path: Path):
    data = write_tiny(tmp_path / "data")
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(json.dumps({**TINY_SPEC, "data": {"kind": "directory",
                                                           "path": str(data)}}))
    out = tmp_path / "fit.json"
    result = CliRunner().invoke(app, ["fit", str(spec_path), "--json", str(out), "--registry",
                                      str(tmp_path / "reg"), "--draws", "100", "--promote"])
    assert result.exit_code == 0, result.output
    assert "convergence gate FAILED" in result.output
    assert "no version was promoted" in result.output
    summary = json.loads(out.read_text())
    assert summary["parameters"]["gamma0"]["r_hat"] > 0
    assert set(summary["totals"]) == {"expected", "recorded", "undiagnosed", "diagnosis_rate"}
    listing = CliRunner().invoke(app, ["versions", "--registry", str(tmp_path / "reg")])
    assert summary["version"] in listing.output and "gate FAILED" in listing.output


def test_approximate_fit_is_labelled_and_never_promotable(tiny, tmp_path: Path):
    dataset, spec, _ = tiny
    result = fit(dataset, spec, progress=False, method="advi")
    assert result.method == "advi" and not result.passed
    assert result.gate["failures"] == [
        "approximate fit (ADVI): exploration only, never promotable"]
    assert result.draws.undiagnosed.shape[1] == len(dataset.cells)
    store = Registry(tmp_path / "registry")
    version = store.save(result, dataset, save_posterior=False)
    assert store.load(version).meta["method"] == "advi"
    with pytest.raises(RegistryError, match="approximate"):
        store.promote(version, force=True, reason="exploration")


def test_refit_starts_warm_from_an_earlier_posterior_or_says_why_not(tiny):
    """A warm refit (PyMC's NUTS under the earlier posterior's mass matrix) agrees with the
    cold fit within Monte Carlo error; a posterior of another model gives a cold start
    with the reason."""
    dataset, _, cold = tiny
    spec = ModelSpec.model_validate({**TINY_SPEC, "sampler": {
        **TINY_SPEC["sampler"], "warm_start": {"tune": 100, "draws": 300}}})
    earlier = cold.idata.posterior.to_dataset()
    warm = fit(dataset, spec, progress=False, start_from=("earlier", earlier))
    assert warm.start == {"kind": "warm", "from": "earlier"}
    assert warm.idata.posterior.sizes["draw"] == 300
    for name in ("gamma0", "mu_rho"):
        a, b = cold.diagnostics.loc[name], warm.diagnostics.loc[name]
        assert abs(a["mean"] - b["mean"]) < 4 * np.hypot(a["mcse_mean"], b["mcse_mean"])
    other = fit(dataset, spec, progress=False,
                start_from=("other", earlier.drop_vars("gamma0")))
    assert other.start["kind"] == "cold"
    assert "other" in other.start["reason"] and "gamma0" in other.start["reason"]
    assert other.idata.posterior.sizes["draw"] == spec.sampler.draws


def test_cli_fit_warm_starts_from_the_active_version(tiny, tmp_path: Path, monkeypatch):
    dataset, _, result = tiny
    store = Registry(tmp_path / "reg")
    active = store.save(result, dataset)
    store.promote(active, force=True, reason="test of warm starts")
    data = write_tiny(tmp_path / "data")
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(json.dumps({
        **TINY_SPEC, "data": {"kind": "directory", "path": str(data)},
        "sampler": {**TINY_SPEC["sampler"], "warm_start": {"tune": 50, "draws": 80}}}))
    calls = []

    def fake_fit(dataset, spec, *, progress, method, start_from):
        calls.append(start_from)
        start = {"kind": "warm", "from": start_from[0]} if start_from else {"kind": "cold"}
        return FitResult(**{**result.__dict__, "spec": spec, "start": start})

    monkeypatch.setattr("gapmodel.fit.fit", fake_fit)
    args = ["fit", str(spec_path), "--registry", str(tmp_path / "reg")]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"from version {active}'s posterior: 2 chains x (50 tune + 80 draws)" in out.output
    assert calls[0][0] == active and "gamma0" in calls[0][1]
    newest = store.versions("tiny")[-1]
    assert newest["start"] == {"kind": "warm", "from": active}
    out = CliRunner().invoke(app, [*args, "--cold-start"])
    assert out.exit_code == 0, out.output
    assert calls[1] is None and "150 tune + 150 draws" in out.output


def test_first_fit_warm_starts_from_a_pilot_run(tiny):
    """Without an earlier version, a spec with a pilot samples a short cold run first and
    takes the warm start from its draws; the posterior agrees with the cold fit."""
    dataset, _, cold = tiny
    spec = ModelSpec.model_validate({**TINY_SPEC, "sampler": {
        **TINY_SPEC["sampler"], "pilot": {"tune": 100, "draws": 100},
        "warm_start": {"tune": 100, "draws": 300, "target_accept": 0.8}}})
    result = fit(dataset, spec, progress=False)
    assert result.start == {"kind": "pilot"}
    assert result.idata.posterior.sizes["draw"] == 300
    for name in ("gamma0", "mu_rho"):
        a, b = cold.diagnostics.loc[name], result.diagnostics.loc[name]
        assert abs(a["mean"] - b["mean"]) < 4 * np.hypot(a["mcse_mean"], b["mcse_mean"])
    mismatched = fit(dataset, spec, progress=False, start_from=(
        "other", cold.idata.posterior.to_dataset().drop_vars("gamma0")))
    assert mismatched.start["kind"] == "pilot" and "gamma0" in mismatched.start["reason"]


def test_first_fit_warm_starts_from_pathfinder(tiny):
    """With a Pathfinder pilot, a first fit starts from its approximation and tunes for the
    pilot's steps, adapting the mass matrix; the posterior agrees with the cold fit."""
    dataset, _, cold = tiny
    spec = ModelSpec.model_validate({**TINY_SPEC, "sampler": {
        **TINY_SPEC["sampler"], "pilot": {"method": "pathfinder", "tune": 200},
        "warm_start": {"tune": 50, "draws": 300, "target_accept": 0.8}}})
    result = fit(dataset, spec, progress=False)
    assert result.start == {"kind": "pilot", "method": "pathfinder"}
    assert result.idata.posterior.sizes["draw"] == 300
    assert result.idata.posterior.attrs["tuning_steps"] == 200
    for name in ("gamma0", "mu_rho"):
        a, b = cold.diagnostics.loc[name], result.diagnostics.loc[name]
        assert abs(a["mean"] - b["mean"]) < 4 * np.hypot(a["mcse_mean"], b["mcse_mean"])


def test_a_pathfinder_start_compiles_the_log_density_once(tmp_path, monkeypatch):
    """Pathfinder's compiled log density and gradient is the one the warm run's NUTS steps
    with: a first fit compiles it once."""
    import pymc as pm

    from gapmodel import fit as fit_module
    from gapmodel.model import build_model

    compiled, steps = [], []
    compile_once = pm.Model.logp_dlogp_function

    def counting(self, *args, **kwargs):
        compiled.append(compile_once(self, *args, **kwargs))
        return compiled[-1]

    def record(**kwargs):
        steps.append(kwargs["step"])
        raise RuntimeError("recorded")

    monkeypatch.setattr(pm.Model, "logp_dlogp_function", counting)
    monkeypatch.setattr(fit_module.pm, "sample", record)
    dataset = load_dataset(write_tiny(tmp_path / "tiny"))
    spec = ModelSpec.model_validate({**TINY_SPEC, "sampler": {
        **TINY_SPEC["sampler"], "pilot": {"method": "pathfinder", "tune": 200},
        "warm_start": {}}})
    model, _ = build_model(dataset, spec)
    warm, start = fit_module._warm_start_or_pilot(model, spec, None, progress=False)
    with pytest.raises(RuntimeError, match="recorded"):
        fit_module.sample(model, spec, progress=False, warm=warm)
    assert start == {"kind": "pilot", "method": "pathfinder"} and len(steps) == 1
    assert len(compiled) == 1  # NUTS would compile its own otherwise


def test_the_pilot_runs_nutpie_with_its_own_tree_depth(tmp_path, monkeypatch):
    """The pilot's maxdepth (else the sampler's) reaches nutpie with the spec's adaptation;
    the sampler's own run keeps the sampler's."""
    from gapmodel import fit as fit_module
    from gapmodel.model import build_model

    calls: list[dict] = []

    def record(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("recorded")

    monkeypatch.setattr(fit_module.pm, "sample", record)
    dataset = load_dataset(write_tiny(tmp_path / "tiny"))
    sampler = {**TINY_SPEC["sampler"], "name": "nutpie", "adaptation": "low_rank",
               "maxdepth": 8, "warm_start": {}}
    for pilot, depth in (({"maxdepth": 5}, 5), ({}, 8)):
        spec = ModelSpec.model_validate({**TINY_SPEC, "sampler": {**sampler, "pilot": pilot}})
        model, _ = build_model(dataset, spec)
        with pytest.raises(RuntimeError, match="recorded"):
            fit_module._warm_start_or_pilot(model, spec, None, progress=False)
        assert calls[-1]["nuts"] == {"adaptation": "low_rank", "maxdepth": depth}
        assert (calls[-1]["tune"], calls[-1]["draws"]) == (300, 200)
    with pytest.raises(RuntimeError, match="recorded"):
        fit_module.sample(model, spec.model_copy(update={"sampler": spec.sampler.model_copy(
            update={"maxdepth": None, "adaptation": "diag"})}), progress=False)
    assert "nuts" not in calls[-1]


def test_a_pilot_needs_a_warm_start():
    with pytest.raises(ValueError, match=r"pilot needs sampler\.warm_start"):
        ModelSpec.model_validate({**TINY_SPEC, "sampler": {
            **TINY_SPEC["sampler"], "pilot": {"tune": 100, "draws": 100}}})


def test_the_fit_command_says_how_it_will_sample():
    from gapmodel.cli import _sampling_plan

    def plan(pilot, start_from=None):
        sampler = {**TINY_SPEC["sampler"], "warm_start": {"tune": 50, "draws": 80},
                   **({"pilot": pilot} if pilot else {})}
        spec = ModelSpec.model_validate({**TINY_SPEC, "sampler": sampler})
        return _sampling_plan(spec, start_from, approximate=False)

    assert plan(None) == "nutpie: 2 chains x (150 tune + 150 draws)"
    assert plan(None, ("v1", None)) == \
        "PyMC's NUTS from version v1's posterior: 2 chains x (50 tune + 80 draws)"
    assert plan({"tune": 100, "draws": 100}).startswith(
        "a nutpie pilot, 2 chains x (100 tune + 100 draws), then PyMC's NUTS")
    assert plan({"method": "pathfinder", "tune": 400}) == (
        "Pathfinder, then PyMC's NUTS adapting its covariance: 2 chains x "
        "(400 tune + 80 draws)")
