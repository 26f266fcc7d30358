# Sourced by scripts/demo and scripts/test: create or reuse the project's virtualenv with the
# pinned, verified stack (see docs/stack.md). Safe to run from both scripts at once (flock).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEQREC_VENV:-$ROOT/.venv}"
PY="${SEQREC_PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.seqrec-stamp"
WANT="$(cat "$ROOT/scripts/requirements.txt" "$ROOT/scripts/constraints.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"

_quiet_pip() {  # pip's notes about unreachable local find-links are noise here
  local log rc=0
  log="$(mktemp)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" >"$log" 2>&1 || rc=$?
  grep -v -e "^WARNING: Location 'file:" "$log" >&2 || true
  rm -f "$log"
  return "$rc"
}

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "seqrec: installing the pinned environment into $VENV (first run: a few minutes)" >&2
  "$PY" -m venv "$VENV"
  _quiet_pip 'pip<26.3'
  _quiet_pip torch==2.13.0  # first and pinned: the CPU wheel; unpinned pulls multi-GB CUDA
  _quiet_pip -c "$ROOT/scripts/constraints.txt" -r "$ROOT/scripts/requirements.txt"
  _quiet_pip --no-deps recbole==1.2.1  # only for the MovieLens-100k files inside its wheel
  _quiet_pip --no-deps -e "$ROOT"
  # recbole is installed without its dependencies on purpose (we only read its data files)
  broken="$("$VENV/bin/python" -m pip check 2>&1 | grep -v -e '^recbole ' -e '^No broken' || true)"
  if [ -n "$broken" ]; then
    echo "$broken" >&2
    echo "seqrec: pip check found broken requirements (above)" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
# The transformers4rec sdist (Apache-2.0) carries real sample data the reader tests use; only the
# tarball is kept (never installed, never committed): seqrec.preprocessing.datasets reads it.
T4R_SDIST="$VENV/sdists/transformers4rec-23.12.0.tar.gz"
if [ ! -f "$T4R_SDIST" ]; then
  "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    transformers4rec==23.12.0 -d "$VENV/sdists" >&2 || echo "seqrec: could not fetch $T4R_SDIST" >&2
fi
flock -u 9
export PATH="$VENV/bin:$PATH"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"
cd "$ROOT"
