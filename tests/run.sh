#!/usr/bin/env bash
# The test command (README, .ci/run): installs everything the tests need on a fresh machine into .venv
# (CPU torch 2.13.0 pinned: any other request pulls a multi-GB CUDA build), then lints and runs pytest.
# Extra arguments go to pytest, e.g. ./tests/run.sh -m "not docker".
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check 'pip>=25.1' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/pip install -q -e '.[train,dashboard]' --group dev 2>&1 | grep -v "^WARNING: Location" || true

# System parts: PostgreSQL server binaries (the tests start their own cluster) and Debian's chromium.
missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || [ -n "${PG_BIN:-}" ] || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "tests/run.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
fi

.venv/bin/ruff check study_admin worker tests benchmarks
exec .venv/bin/python -m pytest "$@"
