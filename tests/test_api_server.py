"""The service as it runs: a real uvicorn process, and promotion killed mid-way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from api_support import (
    MODEL,
    make_keys,
    make_version,
    registry_with_versions,
    start_server,
    stop_server,
    wait_for,
)

from gapmodel.registry import Registry

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uvicorn_serves_estimates_to_a_key(tmp_path):
    versions = registry_with_versions(tmp_path)
    url = f"sqlite:///{tmp_path / 'api.db'}"
    keys = make_keys(url)
    port = free_port()
    env = {**os.environ, "GAPMODEL_REGISTRY": str(tmp_path / "registry"),
           "DATABASE_URL": url, "GAPMODEL_DATASETS_DIR": str(tmp_path / "datasets")}
    server = start_server(port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", server)
        assert httpx.get(f"{base}/ready", timeout=30).status_code == 200
        response = httpx.get(f"{base}/v1/models/{MODEL}/estimates",
                             params={"level": "pcn"},
                             headers={"X-API-Key": keys["viewer"]}, timeout=30)
        assert response.status_code == 200
        body = response.json()
        assert body["version"] == versions["active"].id and body["total_rows"] == 3
        assert httpx.get(f"{base}/v1/models", timeout=10).status_code == 401
    finally:
        stop_server(server)


PROMOTER = textwrap.dedent("""
    import sys
    from gapmodel.registry import Registry
    store = Registry(sys.argv[1])
    a, b = sys.argv[2], sys.argv[3]
    print("started", flush=True)
    while True:
        store.promote(a)
        store.promote(b)
""")


def test_promotion_killed_with_sigkill_leaves_one_version_active(tmp_path):
    root = tmp_path / "registry"
    first = make_version(root, seed=1)
    second = make_version(root, seed=2)
    store = Registry(root)
    store.promote(first.id)
    for attempt in range(6):
        process = subprocess.Popen([sys.executable, "-c", PROMOTER, str(root), first.id,
                                    second.id], stdout=subprocess.PIPE, cwd=ROOT)
        assert process.stdout.readline().strip() == b"started"
        time.sleep(0.2 + 0.15 * attempt)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert store.active_id(MODEL) in (first.id, second.id)
        assert store.active(MODEL).id in (first.id, second.id)
    # leftover temporary pointer files never shadow the pointer itself
    assert (root / MODEL / "ACTIVE").read_text().strip() in (first.id, second.id)
