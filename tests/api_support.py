"""Helpers of the API tests: registries of hand-made versions, apps, keys, a fake fit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from test_report import CHAINS, DRAWS, make_cells, make_draws, make_idata, save_version

from api.db import ROLES, Database
from api.main import create_app
from api.settings import Settings
from gapmodel.registry import Registry, Version
from gapmodel.spec import ModelSpec

MODEL = "api_synthetic"
SPEC = {"name": MODEL, "condition": "hypertension (test)",
        "data": {"kind": "directory", "path": "unused"},
        "detection": {"groups": {"sex": {"type": "free", "pooled": False}}},
        "sampler": {"chains": CHAINS, "tune": DRAWS, "draws": DRAWS, "seed": 5},
        "derived_draws": CHAINS * DRAWS}


def make_version(root: Path, *, passed: bool = True, seed: int = 1, areas: int = 12,
                 name: str = MODEL, small: bool = False) -> Version:
    """A version of `areas` practices in PCNs of 4 x age band x sex x ethnicity x
    deprivation with hand-made draws; its gate verdict set to `passed`. With `small`,
    populations are tiny so that some counts fall in the suppressed range."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"area": [f"P{i:03d}" for i in range(1, areas + 1)],
                          "pcn": [f"N{i // 4 + 1:02d}" for i in range(areas)],
                          "icb": "I1"})
    rows = [(f"{a}|{s}|{e}|{d}", a, s, e, d) for a in ("40-59", "60+") for s in ("F", "M")
            for e in ("White", "Asian", "Black") for d in ("1", "5")]
    strata = pd.DataFrame(rows, columns=["stratum", "age_band", "sex", "ethnicity",
                                         "imd_quintile"])
    cells = make_cells(frame, strata, rng)
    if small:
        cells["population"] = rng.integers(3, 40, len(cells))
    draws = make_draws(cells, rng, "cells")
    spec = ModelSpec.model_validate({**SPEC, "name": name})
    idata = make_idata(rng, ["40-59|F", "40-59|M", "60+|F", "60+|M"], mixing=True)
    summary = {"levels": {"practice": areas, "pcn": frame["pcn"].nunique(), "icb": 1},
               "reference_rows": 4,
               "attributes": {c: sorted(strata[c].unique()) for c in strata.columns[1:]},
               "censoring": {"exact": 100}}
    version = save_version(root, spec, cells, draws, idata, summary=summary)
    return set_gate(version, passed)


def set_gate(version: Version, passed: bool) -> Version:
    """Rewrite a saved version's gate verdict (its meta.json is not hash-checked)."""
    meta_path = version.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["gate"] = {**meta["gate"], "passed": passed,
                    "failures": [] if passed else ["ess bulk 100 < 400"]}
    meta_path.write_text(json.dumps(meta, indent=2))
    return Registry(version.path.parents[1]).load(version.id)


def settings_for(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "registry": tmp / "registry", "database_url": f"sqlite:///{tmp / 'api.db'}",
        "datasets_dir": tmp / "datasets", "specs_dir": tmp / "specs",
        "fit_function": "api_fakes:fake_fit", "log_level": "WARNING"}
    values.update(overrides)
    return Settings(**values)


def make_keys(database_url: str) -> dict[str, str]:
    """One key per role."""
    db = Database(database_url)
    keys = {role: db.create_key(role, f"test-{role}")[1] for role in ROLES}
    db.dispose()
    return keys


def app_for(settings: Settings):
    return create_app(settings)


class Env:
    """A running test app over a registry: client, keys per role, settings, versions."""

    def __init__(self, client: Any, keys: dict[str, str], settings: Settings,
                 versions: dict[str, Version]):
        self.client = client
        self.keys = keys
        self.settings = settings
        self.versions = versions

    def headers(self, role: str | None) -> dict[str, str]:
        return {"X-API-Key": self.keys[role]} if role else {}

    def get(self, path: str, role: str | None = "analyst", **kwargs: Any):
        headers = {**self.headers(role), **kwargs.pop("headers", {})}
        return self.client.get(path, headers=headers, **kwargs)

    def post(self, path: str, role: str | None = "analyst", **kwargs: Any):
        headers = {**self.headers(role), **kwargs.pop("headers", {})}
        return self.client.post(path, headers=headers, **kwargs)

    def delete(self, path: str, role: str | None = "analyst", **kwargs: Any):
        headers = {**self.headers(role), **kwargs.pop("headers", {})}
        return self.client.delete(path, headers=headers, **kwargs)


def start_env(tmp: Path, versions: dict[str, Version], **overrides: Any):
    """A context manager yielding an Env whose app has run its start-up."""
    from contextlib import contextmanager

    from fastapi.testclient import TestClient

    @contextmanager
    def running():
        settings = settings_for(tmp, **overrides)
        keys = make_keys(settings.database_url)
        with TestClient(create_app(settings)) as client:
            yield Env(client, keys, settings, versions)

    return running()


def registry_with_versions(tmp: Path) -> dict[str, Version]:
    """An active gate-passing version and a newer one that failed the gate."""
    active = make_version(tmp / "registry", seed=1)
    Registry(tmp / "registry").promote(active.id)
    failing = make_version(tmp / "registry", seed=2, passed=False)
    return {"active": active, "failing": failing}


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The response has `status` and the one error shape; returns its error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def stop_server(server: subprocess.Popen) -> None:
    """Stop a uvicorn process as Ctrl-C would; kill it if it does not stop in 30 s."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen:
    """`gapmodel serve` as its own process on 127.0.0.1:`port`."""
    return subprocess.Popen(
        [sys.executable, "-m", "gapmodel", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "warning"], cwd=Path(__file__).parents[1], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    """Until `url` answers 200; fails with the server's output if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, server.stdout.read().decode()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.3)
