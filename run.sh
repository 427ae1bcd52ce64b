#!/usr/bin/env bash
# One entry point: installs the locked environment when it is missing or stale, then runs.
#   ./run.sh demo [sweep demo options]   synthetic data + a 4-trial sweep on a local Ray
#   ./run.sh test [pytest options]       the test suite (add -m "not slow" for the fast set)
#   ./run.sh sweep ARGS...               any sweep command in the environment
set -euo pipefail
cd "$(dirname "$0")"

UV_VERSION=0.13.9
TOOLS=.tools

ensure_uv() {
  # uv itself comes from the package index, pinned, in a venv of its own (nothing global).
  if [ ! -x "$TOOLS/bin/uv" ] || [ "$("$TOOLS/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "run.sh: installing uv $UV_VERSION into $TOOLS/ ..." >&2
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
}

sync_env() {
  # --frozen: install exactly uv.lock (TF 2.15.1, the OD API, Ray 2.60, Optuna 5 ...).
  echo "run.sh: syncing .venv from uv.lock ..." >&2
  "$TOOLS/bin/uv" sync --frozen --quiet "$@"
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    ensure_uv; sync_env
    exec .venv/bin/sweep demo "$@" ;;
  test)
    ensure_uv; sync_env --group dev
    # Two workers (pytest-xdist): a real TF sweep in one while the other runs the stand-in and
    # fast tests, which mostly wait. SWEEP_TEST_WORKERS=0 runs everything in this process.
    # The 30 slowest tests are listed at the end: where the suite's time goes, run by run.
    # --no-loadscope-reorder: xdist would hand out the groups with the most tests first; the
    # order tests/conftest.py sets (the real TensorFlow group, then the slow ones) is kept.
    exec .venv/bin/pytest -n "${SWEEP_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder \
      --durations=30 "$@" ;;
  sweep)
    ensure_uv; sync_env
    exec .venv/bin/sweep "$@" ;;
  *)
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac
