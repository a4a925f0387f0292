#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh demo   set everything up, then run the whole graph on the bundled sample tenants
#   ./dev.sh test   set everything up, then run the test suite
#   ./dev.sh ui     the Dagster UI (dg dev) on the demo's instance, to click Materialize
# Set-up is idempotent: a virtualenv in .venv with the project and its extras.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

setup() {
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[local,dev]"
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
    # pytest exits 5 when it collected nothing: that is a failure here, not a pass.
    set +e
    .venv/bin/python -m pytest "$@"
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
  *)
    echo "usage: ./dev.sh demo | test [pytest args] | ui [dg dev args] | setup" >&2
    exit 2
    ;;
esac
