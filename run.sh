#!/usr/bin/env bash
# scratchdet's one entry point for set-up, the main job and the tests.
#
#   ./run.sh demo    set up, then run the main job (scratchdet demo) on SynthFaces
#   ./run.sh test    set up, then run every test: unit tests and every notebook (nbval)
#   ./run.sh setup   only create/refresh the virtual environment (.venv)
#
# Set-up is idempotent: it creates .venv once and reinstalls only when
# pyproject.toml changed. PYTHON=/path/to/python3.11 picks the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

export NO_ALBUMENTATIONS_UPDATE=1   # Albumentations would check online at import
export MPLBACKEND="${MPLBACKEND:-Agg}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv

find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
  echo "error: no python3 found; install Python 3.11 or set PYTHON=..." >&2
  exit 1
}

setup() {
  local stamp="$VENV/.scratchdet-installed" want
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import scratchdet" 2>/dev/null; then
    return
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    local py; py=$(find_python)
    "$py" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 needed, found " + sys.version' 
    echo "== creating $VENV with $("$py" --version)"
    "$py" -m venv "$VENV"
  fi
  echo "== installing scratchdet[dev] into $VENV (first time: a few minutes)"
  local start=$SECONDS
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
  echo "== set-up done in $((SECONDS - start)) s"
}

run_tests() {
  # Notebooks run serially (pytest-xdist gives nothing on 2 cores and splits
  # a notebook's cells across workers). --nbval-current-env runs them with
  # this virtual environment's Python whatever kernels are installed elsewhere.
  "$VENV/bin/python" -m pytest tests notebooks \
    --nbval --nbval-current-env --nbval-cell-timeout=600 \
    --nbval-sanitize-with tests/nbval_sanitize.cfg \
    -p no:cacheprovider --durations=15 "$@"
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  test)  setup; PATH="$PWD/$VENV/bin:$PATH" run_tests "$@" ;;
  demo)  setup; PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/scratchdet" demo "$@" ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
