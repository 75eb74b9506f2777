#!/usr/bin/env bash
# Set up (first time), run gapmodel on the embedded default scenario, then serve the
# fitted model over HTTP. Extra arguments are passed to `gapmodel demo`.
# GAPMODEL_SERVE=0 stops after the demo; GAPMODEL_PORT chooses the port (default 8000).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
.venv/bin/gapmodel demo "$@"
[ "${GAPMODEL_SERVE:-1}" = 0 ] && exit 0
KEY="$(.venv/bin/gapmodel keys demo)"
PORT="${GAPMODEL_PORT:-8000}"
URL="http://127.0.0.1:$PORT"
echo "Serving $URL (interactive documentation: $URL/docs)"
echo "Demo analyst key (kept in models/demo-api-key): $KEY"
echo "  curl -H 'X-API-Key: $KEY' '$URL/v1/models/synthetic_icb/estimates?level=pcn'"
echo "Dashboard: open $URL/ and sign in with the key above"
exec .venv/bin/gapmodel serve --host 127.0.0.1 --port "$PORT"
