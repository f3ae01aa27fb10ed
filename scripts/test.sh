#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite: unit, property, app and browser tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k plan).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
mkdir -p test-artifacts
exec .venv/bin/python -m pytest "$@"
