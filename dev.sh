#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh demo   set everything up, then run the whole graph on the bundled sample tenants
#   ./dev.sh test   set everything up, then run the test suite on every core (-n 0: in one process)
#   ./dev.sh ui     the Dagster UI (dg dev) on the demo's instance, to click Materialize
#   ./dev.sh setup  only the set-up: .venv with the exact versions of requirements.lock and the project
#   ./dev.sh lock   re-resolve requirements.lock from pyproject.toml; commit the two together
#                   (keeps every pin it can; `./dev.sh lock --upgrade` or `--upgrade-package NAME` to move)
# Set-up installs again only when requirements.lock, pyproject.toml or the interpreter changed since its
# last success, and it is silent unless pip fails.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

LOCK=requirements.lock
STAMP=.venv/.etl-assets-installed # the hash of the inputs of the last successful install
LOG=.venv/install.log

inputs_hash() {
  { cat "$LOCK" pyproject.toml; .venv/bin/python -VV; } | sha256sum | cut -d' ' -f1
}

setup() {
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  local want
  want=$(inputs_hash)
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    return 0
  fi
  rm -f "$STAMP"
  # Every package comes from the lock, checked against its hashes. The lock is the whole closure, so
  # nothing is resolved afresh (--no-deps: the pip a new venv brings refuses extras such as gql[requests]
  # under --require-hashes); `pip check` then proves that closure complete. The project goes in without
  # build isolation, with the setuptools of the lock.
  if ! {
    .venv/bin/python -m pip install --no-input --progress-bar off --require-hashes --no-deps -r "$LOCK" &&
      .venv/bin/python -m pip install --no-input --progress-bar off --no-deps --no-build-isolation -e . &&
      .venv/bin/python -m pip check
  } >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "dev.sh: set-up failed; pip's output is above and in $LOG" >&2
    echo "dev.sh: if pyproject.toml's dependencies changed, refresh the lock first: ./dev.sh lock" >&2
    exit 1
  fi
  echo "$want" >"$STAMP"
}

lock() {
  [ -x .venv/bin/uv ] || setup
  # uv reads no pip configuration, so it is handed the wheel folders pip is configured with: that is
  # where these machines keep the CPU build of torch (PyPI's Linux torch is the CUDA build, which pulls
  # gigabytes of nvidia-* wheels).
  local links args=() link
  links=${PIP_FIND_LINKS:-$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)}
  for link in $links; do args+=(--find-links "$link"); done
  # Starting from the current lock keeps its pins as preferences: only what pyproject.toml forces moves.
  cp "$LOCK" "$LOCK.new" 2>/dev/null || true
  .venv/bin/uv pip compile pyproject.toml --quiet --extra local --extra dev \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
    --custom-compile-command "./dev.sh lock" --output-file "$LOCK.new" "${args[@]}" "$@" ||
    { rm -f "$LOCK.new"; exit 1; }
  if ! grep -q '^torch==[^ ]*+cpu ' "$LOCK.new" || grep -qiE '^(nvidia-|triton==)' "$LOCK.new"; then
    rm -f "$LOCK.new"
    echo "dev.sh lock: torch did not resolve to its CPU build (or CUDA packages came along); $LOCK is unchanged" >&2
    exit 1
  fi
  mv "$LOCK.new" "$LOCK"
}

browser() {
  # The UI test drives Debian's Chromium headless; test tools cannot download their own browser here.
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

case "${1:-}" in
  demo)
    setup
    shift
    exec .venv/bin/etl-assets demo "$@"
    ;;
  test)
    setup
    browser
    shift
    # pytest-xdist workers, each taking whole test files (--dist loadfile): a module's
    # tests stay in one process, in their order, sharing its module-scoped fixtures (a Dagster
    # deployment, a demo run), and every worker has its own PostgreSQL server (etl_assets_tests/pg.py).
    # An -n or --dist given here comes later and wins: `-n 0` runs in this one process (a quick
    # single file); --pdb turns the workers off by itself. The files are handed out in the order
    # conftest.py gives them (slow ones first), not re-sorted by their number of tests.
    # One worker more than the cores: the tests wait on subprocesses, servers and sockets, and with
    # one worker a core a quarter of the CPU stayed idle (8 graph-test files on 2 cores: 524 s
    # and 25 % idle with 2 workers, 427 s and 3 % idle with 3).
    parallel=(-n "$(($(nproc) + 1))" --dist loadfile --no-loadscope-reorder)
    for arg in "$@"; do
      case "$arg" in no:xdist | -pno:xdist) parallel=() ;; esac
    done
    # pytest exits 5 when it collected nothing: that is a failure here, not a pass.
    set +e
    # --durations: every run (CI's included) ends by naming its 25 slowest tests, to keep the suite's
    # time in check.
    .venv/bin/python -m pytest "${parallel[@]}" --durations=25 "$@"
    rc=$?
    set -e
    if [ "$rc" = 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
    exit "$rc"
    ;;
  ui)
    setup
    shift
    # The UI on the same instance the demo recorded its runs in.
    export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.data/dagster_home}
    mkdir -p "$DAGSTER_HOME"
    [ -f "$DAGSTER_HOME/dagster.yaml" ] || cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
    exec .venv/bin/dg dev "$@"
    ;;
  setup)
    setup
    ;;
  lock)
    shift
    lock "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | test [pytest args] | ui [dg dev args] | setup | lock [uv pip compile args]" >&2
    exit 2
    ;;
esac
