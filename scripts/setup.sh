#!/usr/bin/env bash
# Create .venv and install the pinned requirements (idempotent; fast when nothing changed).
#   scripts/setup.sh          runtime (app + CLI)
#   scripts/setup.sh --dev    runtime + test tools, Chromium and Graphviz for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0; [ "${1:-}" = "--dev" ] && DEV=1
PY=${PYTHON:-python3}

apt_install() {  # apt_install CMD PKG...: install Debian packages when CMD is missing
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing $* (apt)"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

apt_install dot graphviz
[ $DEV -eq 1 ] && apt_install chromium chromium

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
req=requirements.txt; [ $DEV -eq 1 ] && req=requirements-dev.txt
stamp=.venv/.installed-$(cat requirements.txt requirements-dev.txt requirements-hf.txt | sha256sum | cut -c1-16)-$DEV
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and alone, pinned: an unpinned torch (or one pulled in by a
  # dependency) resolves to a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "$(grep -E '^torch==' requirements.txt)"
  .venv/bin/python -m pip install -q -r "$req"
  # transformers (a test reference) without its tokenizer / CLI deps; see requirements-hf.txt.
  if [ $DEV -eq 1 ]; then .venv/bin/python -m pip install -q --no-deps -r requirements-hf.txt; fi
  .venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$stamp"
fi
