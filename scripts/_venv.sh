# Sourced by scripts/demo and scripts/test: make .venv and install the project once.
# Re-installs only when pyproject.toml changed since the last install (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
EXTRAS="${STATION_EXTRAS:-train,genicam,test}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-${EXTRAS//,/_}"
if [ ! -f "$STAMP" ]; then
    echo "installing the station into $VENV (extras: $EXTRAS)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    # torch is pinned to the CPU wheel (torch==2.13.0) in pyproject.toml.
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$EXTRAS]" >&2
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
