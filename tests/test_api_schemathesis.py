"""Property-based requests from the OpenAPI document (schemathesis): whatever a client
sends within the document, the service answers without a server error."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from api_support import make_keys, registry_with_versions, settings_for
from hypothesis import HealthCheck, settings

from api.main import create_app


def build_schema():
    """The app over a temporary registry (made at import: schemathesis parametrizes
    tests from the document when the module is collected)."""
    tmp = Path(tempfile.mkdtemp(prefix="gapmodel-schema-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    registry_with_versions(tmp)
    config = settings_for(tmp)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(config)), \
        make_keys(config.database_url)


schema, KEYS = build_schema()


# fit jobs would start worker processes and key revocation would revoke the test's own
# keys: both are covered by their own tests
@schema.exclude(path="/v1/fits", method="POST").exclude(
    path_regex="^/v1/keys/", method="DELETE").parametrize()
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    role = "admin" if case.path.startswith(("/v1/keys", "/v1/audit")) else "analyst"
    response = case.call(headers={"X-API-Key": KEYS[role]})
    assert response.status_code < 500, (case.method, case.path, response.text)
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}
