"""The embedded LLM's native libraries run on any x86-64 CPU with AVX2.

llama.cpp built with its default ``-march=native`` on a machine whose CPU reports AMX emits AMX
tile instructions (``tileloadd``, ``tdpb*``), and AVX-512 on any AVX-512 machine; a CPU or a
hypervisor that does not allow them kills the process with SIGILL on the first generation.
``scripts/setup.sh`` builds a portable wheel; these tests disassemble what is installed.
"""

from __future__ import annotations

import importlib.util
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# AMX (tile configuration, loads, stores, dot products) and AVX-512 (zmm registers, opmask
# registers) and AVX-VNNI / AVX512-VNNI dot products, none of which every AVX2 CPU has.
FORBIDDEN = re.compile(
    r"\b(ldtilecfg|sttilecfg|tileloadd|tileloaddt1|tilestored|tilezero|tilerelease"
    r"|tdpb[su][su]d|tdpbf16ps|tdpfp16ps|vpdpbusds?|vpdpwssds?)\b"
    r"|%zmm\d+|%k[1-7]\b"
)

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="the check is for x86-64 builds"
)


def native_libraries() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        pytest.fail("llama_cpp is not installed: the embedded extra is part of the test set-up")
    libs = sorted(Path(spec.origin).parent.glob("lib/*.so*"))
    assert libs, f"no shared libraries next to {spec.origin}"
    return libs


def forbidden_instructions(library: Path) -> dict[str, int]:
    """Counts of forbidden mnemonics and registers in ``library``'s disassembly."""
    objdump = shutil.which("objdump")
    assert objdump is not None, "objdump (binutils) is needed to check the llama.cpp build"
    out = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, int] = {}
    for match in FORBIDDEN.finditer(out):
        found[match.group(0)] = found.get(match.group(0), 0) + 1
    return found


def test_the_pattern_catches_amx_and_avx512_lines() -> None:
    lines = [
        "  4012f0:\ttileloadd (%rax,%rcx,1),%tmm0",
        "  4012f8:\ttdpbssd %tmm2,%tmm1,%tmm0",
        "  401300:\tvmovups (%rdi),%zmm1",
        "  401308:\tvaddps %ymm1,%ymm2,%ymm3{%k1}",
    ]
    assert all(FORBIDDEN.search(line) for line in lines)
    assert not FORBIDDEN.search("  401310:\tvfmadd231ps %ymm1,%ymm2,%ymm3")


def test_llama_cpp_libraries_hold_no_amx_or_avx512_code() -> None:
    libraries = native_libraries()
    assert any(lib.name.startswith("libggml") for lib in libraries), libraries
    offending = {lib.name: found for lib in libraries if (found := forbidden_instructions(lib))}
    assert not offending, (
        f"the llama.cpp build uses instructions an AVX2 CPU may not have: {offending}; "
        "rebuild with scripts/setup.sh (GGML_NATIVE=OFF)"
    )


@pytest.mark.slow
def test_set_up_smoke_test_generates_tokens() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "popcorn.llm.smoke"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("embedded LLM ok:"), proc.stdout
