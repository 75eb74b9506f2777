"""Write the service's OpenAPI document to docs/openapi.json (the API reference).

    .venv/bin/python scripts/openapi.py [PATH]

tests/test_api_reference.py fails when the stored document differs from the app's.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from api.main import create_app
from api.settings import Settings


def document() -> str:
    """The app's OpenAPI document as stable, indented JSON (no deployment state used)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(registry=Path(tmp) / "registry",
                            database_url=f"sqlite:///{Path(tmp) / 'api.db'}")
        app = create_app(settings)
        text = json.dumps(app.openapi(), indent=1, sort_keys=True) + "\n"
        app.state.services.db.dispose()
    return text


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.json")
    target.write_text(document(), encoding="utf-8")
    print(f"wrote {target}")
