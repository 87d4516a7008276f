#!/usr/bin/env bash
# Set up popcorn in .venv at the repository root.
#
#   bash scripts/setup.sh          # popcorn + embedded LLM (SmolLM2) + hf + PE embedder + diffusers
#                                  # + predictor + study reports
#   bash scripts/setup.sh --dev    # ... plus the test and lint tools
#
# Safe to rerun: it does nothing when pyproject.toml and this script are unchanged. The first run
# compiles llama-cpp-python (about 5-10 minutes on 2 cores); pip keeps the built wheel in its
# cache, so later set-ups on the same machine take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="embedded,hf,pe,diffusion,predictor,study,app"
case "${1:-}" in
  --dev) extras="embedded,hf,pe,diffusion,predictor,study,app,dev" ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--dev]" >&2; exit 2 ;;
esac

python="${PYTHON:-python3}"
fingerprint="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
stamp=".venv/.setup-${fingerprint}-${extras//,/-}"
if [[ -f "$stamp" && -x .venv/bin/popcorn ]]; then
  exit 0
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv" >&2
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first, pinned: 2.13.0 is the CPU build; letting a dependency pick torch would pull a
# multi-GB CUDA build. The project's own range (torch>=2.3,<3) is then already satisfied.
echo "setup: installing torch 2.13.0" >&2
"${pip[@]}" "torch==2.13.0"
echo "setup: installing popcorn[${extras}] (llama-cpp-python compiles on first install)" >&2
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
  "${pip[@]}" -e ".[${extras}]"
if [[ "$extras" == *dev* ]] && ! command -v chromium >/dev/null 2>&1; then
  # The web app's browser test drives Debian's Chromium through Playwright.
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Chromium (apt) for the browser test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium >/dev/null) \
      || echo "setup: warning: could not install chromium; the browser test will fail" >&2
  else
    echo "setup: warning: install Debian's chromium (apt-get install chromium) for the browser test" >&2
  fi
fi
rm -f .venv/.setup-*
touch "$stamp"
echo "setup: done (.venv)" >&2
