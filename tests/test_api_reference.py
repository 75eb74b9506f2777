"""docs/openapi.json, the API reference, is the app's own OpenAPI document."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stored_openapi_document_is_current():
    spec = importlib.util.spec_from_file_location("openapi_script", ROOT / "scripts/openapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stored = (ROOT / "docs/openapi.json").read_text(encoding="utf-8")
    assert stored == module.document(), (
        "docs/openapi.json is out of date: run .venv/bin/python scripts/openapi.py")
