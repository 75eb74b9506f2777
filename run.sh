#!/usr/bin/env bash
# Set up (first time) and run gapmodel on the embedded default scenario.
# Extra arguments are passed to `gapmodel demo`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
exec .venv/bin/gapmodel demo "$@"
