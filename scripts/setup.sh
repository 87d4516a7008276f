#!/usr/bin/env bash
# Set up popcorn in .venv at the repository root.
#
#   bash scripts/setup.sh          # popcorn + embedded LLM (SmolLM2) + hf + PE embedder + diffusers
#   bash scripts/setup.sh --dev    # ... plus the test and lint tools
#
# Safe to rerun: it does nothing when pyproject.toml and this script are unchanged. The first run
# compiles llama-cpp-python (about 5-10 minutes on 2 cores); pip keeps the built wheel in its
# cache, so later set-ups on the same machine take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="embedded,hf,pe,diffusion"
case "${1:-}" in
  --dev) extras="embedded,hf,pe,diffusion,dev" ;;
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
rm -f .venv/.setup-*
touch "$stamp"
echo "setup: done (.venv)" >&2
