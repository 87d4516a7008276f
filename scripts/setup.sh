#!/usr/bin/env bash
# Set up popcorn in .venv at the repository root.
#
#   bash scripts/setup.sh            # popcorn + embedded LLM (SmolLM2) + hf + PE embedder
#                                    # + diffusers + predictor + study reports + web app
#   bash scripts/setup.sh --dev      # ... plus the test and lint tools
#   bash scripts/setup.sh --minimal  # popcorn + the embedded LLM only (no torch): a first try
#   bash scripts/setup.sh --cuda     # on an NVIDIA GPU: CUDA torch, llama.cpp's CUDA backend
#                                    # (so --n-gpu-layers offloads), the quant extra
#                                    # (--cuda combines with --dev)
#
# Safe to rerun: it does nothing when pyproject.toml and this script are unchanged. The first run
# compiles llama-cpp-python for any x86-64 CPU with AVX2 (about 5-10 minutes on 2 cores) and
# keeps the wheel in ~/.cache/popcorn/wheels, so later set-ups on the same machine take a few
# minutes at most. Set-up ends with a smoke test of the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="embedded,hf,pe,diffusion,predictor,study,app"
dev="" minimal="" cuda=""
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --minimal) minimal=1 ;;
    --cuda) cuda=1 ;;
    *) echo "usage: bash scripts/setup.sh [--dev] [--minimal | --cuda]" >&2; exit 2 ;;
  esac
done
if [[ -n "$minimal" && ( -n "$cuda" || -n "$dev" ) ]]; then
  echo "setup: --minimal is the embedded LLM alone; it does not combine with --dev or --cuda" >&2
  exit 2
fi
[[ -n "$minimal" ]] && extras="embedded"
[[ -n "$cuda" ]] && extras+=",quant"
[[ -n "$dev" ]] && extras+=",dev"
if [[ -n "$cuda" ]] && ! command -v nvcc >/dev/null 2>&1; then
  echo "setup: error: --cuda compiles llama.cpp's CUDA backend and needs the CUDA toolkit's" \
    "nvcc on PATH (e.g. /usr/local/cuda/bin); install it, or set up without --cuda" >&2
  exit 1
fi

python="${PYTHON:-python3}"

# The embedded LLM: llama-cpp-python, compiled here from source. Compiled for the build machine
# (llama.cpp's default, -march=native) it may use instructions that another CPU, or this one
# under a hypervisor, does not allow: AMX tile instructions reported by a Sapphire Rapids CPU
# but trapped by its VM kill the first generation with SIGILL. So the build is portable: the
# x86-64 AVX2 baseline (AVX, AVX2, FMA, F16C, BMI2), no AVX-512, no AMX, one CPU backend.
# pip's own wheel cache could hand back an earlier native build of the same version, so the
# wheel is built without it and kept in a cache of ours, keyed by version and flags.
llama_version="0.3.36"
llama_cmake="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF"
llama_cmake+=" -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
llama_cmake+=" -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF"
llama_cmake+=" -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF"
llama_cmake+=" -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF"
# With --cuda, llama.cpp also gets its CUDA backend (for the GPUs of the build machine's CUDA
# toolkit defaults); the CPU part stays portable.
[[ -n "$cuda" ]] && llama_cmake+=" -DGGML_CUDA=ON"
llama_tag="$(printf '%s %s' "$llama_version" "$llama_cmake" | sha256sum | cut -c1-12)"
wheel_cache="${POPCORN_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/popcorn/wheels}"
llama_wheels="$wheel_cache/llama-cpp-python-$llama_version-$llama_tag"

install_llama_cpp() {
  [[ "$extras" == *embedded* ]] || return 0
  if ! ls "$llama_wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "setup: compiling llama-cpp-python $llama_version for any x86-64 CPU with AVX2" \
      "(5-10 minutes on 2 cores, once per machine)" >&2
    local tmp
    tmp="$(mktemp -d)"
    CMAKE_ARGS="$llama_cmake" \
      CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
      .venv/bin/python -m pip wheel --quiet --disable-pip-version-check --no-deps \
      --no-cache-dir --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$llama_version"
    mkdir -p "$wheel_cache"
    rm -rf "$llama_wheels.partial"
    mv "$tmp" "$llama_wheels.partial"
    mv "$llama_wheels.partial" "$llama_wheels"  # only a complete build gets the final name
  fi
  # --force-reinstall: a venv may hold a native build of the same version from before.
  "${pip[@]}" --no-deps --force-reinstall "$llama_wheels"/llama_cpp_python-*.whl
}

# A few tokens through the embedded model, in a child process so that a crash of the native
# library (SIGILL, SIGSEGV) is reported here, in one line, and not by the user's first command.
smoke_test() {
  [[ "$extras" == *embedded* ]] || return 0
  local status=0
  .venv/bin/python -m popcorn.llm.smoke >/dev/null 2>.venv/smoke.log || status=$?
  if [[ $status -ne 0 ]]; then
    local why
    why="$(tail -n 1 .venv/smoke.log 2>/dev/null)"
    if [[ $status -gt 128 ]]; then
      why="killed by signal $((status - 128))$([[ $status -eq 132 ]] && echo ' (illegal instruction)')"
    fi
    echo "setup: error: the embedded LLM failed its smoke test (${why:-exit $status}):" \
      "rebuild it with 'rm -rf $llama_wheels && bash scripts/setup.sh';" \
      "the embedded build needs an x86-64 CPU with AVX2 (see docs/install.md)" >&2
    exit 1
  fi
  rm -f .venv/smoke.log
}
fingerprint="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
stamp=".venv/.setup-${fingerprint}-${extras//,/-}${cuda:+-cuda}"
if [[ -f "$stamp" && -x .venv/bin/popcorn ]]; then
  exit 0
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv" >&2
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first. Without --cuda, pinned: 2.13.0 is the CPU build, and letting a dependency pick
# torch would pull a multi-GB CUDA build; the project's range (torch>=2.3,<3) is then already
# satisfied. With --cuda, the registry's newest torch in that range, which is a CUDA build on
# Linux. --minimal needs no torch at all.
if [[ -n "$cuda" ]]; then
  echo "setup: installing torch with CUDA (several GB)" >&2
  "${pip[@]}" "torch>=2.3,<3"
elif [[ -z "$minimal" ]]; then
  echo "setup: installing torch 2.13.0 (CPU)" >&2
  "${pip[@]}" "torch==2.13.0"
fi
install_llama_cpp
echo "setup: installing popcorn-video[${extras}]" >&2
"${pip[@]}" -e ".[${extras}]"
if [[ -n "$dev" ]] && ! command -v chromium >/dev/null 2>&1; then
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
smoke_test
rm -f .venv/.setup-*
touch "$stamp"
echo "setup: done (.venv)" >&2
