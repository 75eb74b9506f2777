#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 found on this machine and install gapmodel into it.
# Sourced by run.sh and test.sh; safe to run again (reinstalls only when pyproject.toml changes).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

python_ok() {  # usable interpreter of version >= 3.12?
  "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  if [ -n "${GAPMODEL_PYTHON:-}" ]; then
    python_ok "$GAPMODEL_PYTHON" && { echo "$GAPMODEL_PYTHON"; return 0; }
    echo "GAPMODEL_PYTHON=$GAPMODEL_PYTHON is not a Python >= 3.12" >&2; return 1
  fi
  local cand path root
  for cand in python3.13 python3.12 python3; do
    path="$(command -v "$cand" 2>/dev/null)" || continue
    python_ok "$path" && { echo "$path"; return 0; }  # a pyenv shim may fail here: skip it
  done
  root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
  for path in $(ls -d "$root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV) \
              /usr/bin/python3.13 /usr/bin/python3.12 /usr/local/bin/python3.13 \
              /usr/local/bin/python3.12; do
    [ -x "$path" ] && python_ok "$path" && { echo "$path"; return 0; }
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
  if ! PY="$(find_python)"; then
    cat >&2 <<MSG
gapmodel needs Python 3.12 or newer and none was found.
Looked on PATH (python3.13, python3.12, python3), in pyenv's versions and in /usr/bin.
Install one (e.g. 'pyenv install 3.12') or point GAPMODEL_PYTHON at it, then run again.
MSG
    exit 1
  fi
  echo "Creating .venv with $PY ($("$PY" --version 2>&1))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.gapmodel-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "Installing gapmodel and its dependencies into .venv (first run takes a few minutes)..."
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[dev]"
  echo "$WANT" > "$STAMP"
fi
