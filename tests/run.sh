#!/usr/bin/env bash
# The test command (README, .ci/run): installs everything the tests need on a fresh machine into .venv
# (CPU torch 2.13.0 pinned: any other request pulls a multi-GB CUDA build), then lints, type-checks and
# runs pytest. Extra arguments go to pytest, e.g. ./tests/run.sh -m "not docker".
set -euo pipefail
cd "$(dirname "$0")/.."

# Run an install step quietly; on failure show its output and stop.
quietly() {
  local output
  if ! output=$("$@" 2>&1); then
    printf '%s\n' "$output" >&2
    echo "tests/run.sh: failed: $*" >&2
    exit 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  quietly python3 -m venv .venv
fi
quietly .venv/bin/pip install --disable-pip-version-check 'pip>=25.1'
quietly .venv/bin/pip install torch==2.13.0
quietly .venv/bin/pip install -e '.[train,dashboard,s3,sbx]' --group dev -c requirements.lock  # the image's versions

# System parts: PostgreSQL server binaries (the tests start their own cluster) and Debian's chromium.
missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || [ -n "${PG_BIN:-}" ] || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    quietly apt-get update -qq
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "tests/run.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
fi

.venv/bin/ruff check study_contract study_admin worker tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
